"""Control messages: signing, validation and the reasons a device gives when it rejects one."""

from __future__ import annotations

import dataclasses
import json

import pytest
from tests.helpers.keys import INTRUDER, OPERATOR, TRUSTED

from edgeloop.contract.keys import Keyring, Signer
from edgeloop.contract.messages import (
    BadConfig,
    BadDeviceState,
    ControlRejected,
    DeviceState,
    Target,
    config_version_of,
    new_assignment,
    parse_assignment,
    parse_device_state,
    sign,
    validate_device_config,
)

GROUPS = {"line-canary", "plant-north"}
P = "demo"


def signed(body: dict[str, object], signer: Signer = OPERATOR) -> bytes:
    body = {**body, "key_id": signer.key_id}
    return json.dumps({**body, "signature": sign(body, signer)}).encode()


def valid_body() -> dict[str, object]:
    assignment = new_assignment(Target("group", "plant-north"), model_version="3", assignment_id="asg-1", pipeline=P)
    return assignment.payload()


def test_a_signed_assignment_round_trips() -> None:
    assignment = new_assignment(
        Target("group", "plant-north"),
        model_version="7",
        config={"telemetry_interval_s": 2},
        issuer="rollout",
        pipeline=P,
    )
    parsed = parse_assignment(assignment.to_wire(OPERATOR), TRUSTED, GROUPS)
    assert parsed.key_id == OPERATOR.key_id
    assert parsed == dataclasses.replace(assignment, key_id=OPERATOR.key_id)
    assert parsed.config_version == config_version_of({"telemetry_interval_s": 2})
    assert parsed.target.matches("any-device", "plant-north")
    assert not parsed.target.matches("any-device", "line-canary")


def test_device_and_all_targets() -> None:
    wire = new_assignment(Target("device", "d-1"), model_version="2", pipeline=P).to_wire(OPERATOR)
    one = parse_assignment(wire, TRUSTED, GROUPS)
    assert one.target.matches("d-1", "plant-north") and not one.target.matches("d-2", "plant-north")
    wire = new_assignment(Target("all"), model_version="2", pipeline=P).to_wire(OPERATOR)
    everyone = parse_assignment(wire, TRUSTED, GROUPS)
    assert everyone.target.matches("d-9", "line-canary")
    assert everyone.target.key == "all" and one.target.key == "device:d-1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(valid_body()).encode(), "signature: missing"),
        (signed(valid_body(), INTRUDER), "is not a trusted key"),
        (json.dumps({**valid_body(), "signature": "ed25519:AAAA"}).encode(), "key_id: missing"),
        (signed({**valid_body(), "sequence": 0}), "sequence"),
        (signed({**valid_body(), "sequence": "7"}), "sequence"),
        (signed({k: v for k, v in valid_body().items() if k != "pipeline"}), "pipeline"),
        (signed({**valid_body(), "expires_at": "soon"}), "expires_at"),
        (signed({**valid_body(), "expires_at": "2020-01-01T00:00:00Z"}), "the order expired at 2020"),
        (signed({**valid_body(), "target": {"kind": "group", "id": "atlantis"}}), "group 'atlantis' is not a group"),
        (signed({**valid_body(), "target": {"kind": "planet"}}), "target.kind"),
        (signed({**valid_body(), "target": {"kind": "device"}}), "target.id"),
        (signed({**valid_body(), "model_version": "latest"}), "model_version"),
        (signed({**valid_body(), "model_version": 3}), "model_version"),
        (signed({**valid_body(), "config": {"telemetry_interval_s": 2}}), "config_version: required"),
        (signed({**valid_body(), "config": [1]}), "config: not an object"),
        (signed({k: v for k, v in valid_body().items() if k != "model_version"}), "needs a model_version"),
        (signed({**valid_body(), "shell": "rm -rf /"}), "unknown fields ['shell']"),
        (signed({**valid_body(), "type": "reboot"}), "type"),
        (signed({**valid_body(), "id": ""}), "id:"),
        (signed({**valid_body(), "issued_at": "yesterday"}), "issued_at"),
        (
            json.dumps({**valid_body(), "key_id": OPERATOR.key_id, "signature": "ed25519:\u00e9"}).encode(),
            "not base64",
        ),
        (
            json.dumps({**valid_body(), "key_id": OPERATOR.key_id, "signature": "ed25519:" + "A" * 88}).encode(),
            "does not verify",
        ),
        (json.dumps({**valid_body(), "id": "\ud800"}).encode(), "lone UTF-16 surrogate"),
        (b'{"id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "more than the limit of 65536"),
        (b'{"id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested more than the limit of 32"),
    ],
)
def test_bad_control_messages_are_rejected_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(ControlRejected) as caught:
        parse_assignment(value, TRUSTED, GROUPS)
    assert reason in caught.value.reason


def test_a_tampered_message_is_rejected_even_if_well_formed() -> None:
    body = json.loads(new_assignment(Target("group", "plant-north"), model_version="3", pipeline=P).to_wire(OPERATOR))
    for field, value in (("model_version", "4"), ("sequence", body["sequence"] + 1), ("expires_at", "2999-01-01Z")):
        with pytest.raises(ControlRejected, match="does not verify"):
            parse_assignment(json.dumps({**body, field: value}).encode(), TRUSTED, GROUPS)


def test_any_of_the_trusted_keys_may_sign_and_an_order_names_its_key() -> None:
    new_key = Signer.from_seed(b"next key")
    both = Keyring.of([OPERATOR.public, new_key.public])
    assert Keyring.from_text(" ".join(both.hex_keys()), "hand-off").ids == both.ids  # how tasks pass keys on
    assert Keyring.from_text(both.pem().decode(), "trusted.pem").ids == both.ids
    order = new_assignment(Target("all"), model_version="2", pipeline=P)
    assert parse_assignment(order.to_wire(new_key), both, GROUPS).key_id == new_key.key_id
    assert parse_assignment(order.to_wire(OPERATOR), both, GROUPS).key_id == OPERATOR.key_id
    with pytest.raises(ControlRejected, match="is not a trusted key"):
        parse_assignment(order.to_wire(new_key), TRUSTED, GROUPS)


def test_sequences_grow_and_orders_expire() -> None:
    first = new_assignment(Target("all"), model_version="2", pipeline=P, issued_at=1_767_225_600.0, ttl_s=60)
    second = new_assignment(Target("all"), model_version="2", pipeline=P)
    assert second.sequence > first.sequence
    assert first.expires_at == "2026-01-01T00:01:00.000Z"
    parse_assignment(first.to_wire(OPERATOR), TRUSTED, GROUPS, now=1_767_225_659.0)
    with pytest.raises(ControlRejected, match="expired"):
        parse_assignment(first.to_wire(OPERATOR), TRUSTED, GROUPS, now=1_767_225_661.0)


def test_rejections_name_the_id_and_target_when_readable() -> None:
    with pytest.raises(ControlRejected) as caught:
        parse_assignment(signed(valid_body(), INTRUDER), TRUSTED, GROUPS)
    assert caught.value.control_id == "asg-1"
    assert caught.value.target == Target("group", "plant-north")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"telemetry_interval": 1}, "config.telemetry_interval: unknown setting"),
        ({"telemetry_interval_s": "fast"}, "is not a number"),
        ({"telemetry_interval_s": True}, "is not a number"),
        ({"telemetry_interval_s": 0}, "outside"),
        ({"confidence_threshold": 1.5}, "outside"),
        ({"heartbeat_interval_s": float("nan")}, "is not a number"),
    ],
)
def test_bad_device_config(config: dict[str, object], message: str) -> None:
    with pytest.raises(BadConfig, match=message):
        validate_device_config(config)


def test_good_device_config() -> None:
    assert validate_device_config({"telemetry_interval_s": 2, "confidence_threshold": 0.4}) == {
        "telemetry_interval_s": 2.0,
        "confidence_threshold": 0.4,
    }


def test_new_assignment_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs a model_version"):
        new_assignment(Target("all"), pipeline=P)
    with pytest.raises(ValueError, match="registry version"):
        new_assignment(Target("all"), model_version="v3", pipeline=P)
    with pytest.raises(BadConfig):
        new_assignment(Target("all"), config={"rpm": 3}, pipeline=P)
    with pytest.raises(ValueError, match="assignment_id"):
        new_assignment(Target("all"), model_version="1", assignment_id="has spaces", pipeline=P)
    with pytest.raises(ValueError, match="pipeline"):
        new_assignment(Target("all"), model_version="1", pipeline="no spaces please")


def test_config_version_is_a_content_hash() -> None:
    assert config_version_of({"a": 1, "b": 2}) == config_version_of({"b": 2, "a": 1})
    assert config_version_of({"a": 1}) != config_version_of({"a": 2})


def test_device_state_round_trip_and_sync() -> None:
    state = DeviceState("d-1", "plant-north", {"model_version": "3"}, {"model_version": "2"})
    parsed = parse_device_state(b"d-1", state.to_wire())
    assert parsed == state
    assert not parsed.in_sync
    parsed.reported["model_version"] = "3"
    assert parsed.in_sync


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"d-1", b"nope", "not JSON"),
        (b"d-1", b"[]", "not a JSON object"),
        (b"d-1", b'{"device_id": "d-1"}', "group_id"),
        (b"d-1", b'{"device_id": "d-2", "group_id": "g"}', "differs from the key"),
        (b"d-1", b'{"device_id": "d-1", "group_id": "g", "desired": 3}', "must be objects"),
    ],
)
def test_bad_device_state_records(key: bytes, value: bytes, message: str) -> None:
    with pytest.raises(BadDeviceState, match=message):
        parse_device_state(key, value)
