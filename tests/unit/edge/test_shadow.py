"""Shadow evaluation: the challenger runs beside the champion on the device's inputs, only the champion
serves, each window becomes a signed report, and the shadow gate decides from the reports."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from tests.helpers.keys import INTRUDER, device_key
from tests.unit.edge.conftest import NOW, PIPELINE, assignment_wire

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.identity import DeviceRegistry, Enrolment
from edgeloop.contract.keys import Keyring
from edgeloop.contract.messages import RefusedReport, ShadowOrder
from edgeloop.contract.shadow import BadShadowReport, ShadowReport, parse_shadow_report
from edgeloop.edge.device import DeviceCore
from edgeloop.edge.runtime import OnnxModel, load_model
from edgeloop.edge.shadow import ShadowEvaluator
from edgeloop.rollout.shadow import evaluate_shadow
from edgeloop.spec import PipelineSpec, ShadowSpec
from edgeloop.training.sensors import SensorProfile

DEVICE, GROUP = "plant-north-00001", "plant-north"


def readings(profile: SensorProfile, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return profile.sample(profile.initial_states(n, rng), profile.device_bias(n, rng), np.zeros((n, 6)), rng)


def ticking(champion_ms: float, challenger_ms: float) -> Callable[[], float]:
    """A timer under which every champion call takes `champion_ms` and every challenger call `challenger_ms`."""
    steps = itertools.cycle([0.0, champion_ms / 1000, challenger_ms / 1000])  # before, between, after the two calls
    clock = [0.0]

    def now() -> float:
        clock[0] += next(steps)
        return clock[0]

    return now


class Stand:
    """A challenger stand-in: fixed labels and an answer function (or an exception)."""

    def __init__(self, version: str, labels: Sequence[str], answer: Callable[[np.ndarray], np.ndarray]) -> None:
        self.version, self.labels, self.answer = version, list(labels), answer

    def predict_proba(self, rows: np.ndarray, /) -> np.ndarray:
        return self.answer(rows)


@pytest.fixture(scope="module")
def champion(spec: PipelineSpec, baseline_model: bytes) -> OnnxModel:
    return load_model(baseline_model, "3", spec.features)


def shadow_of(champion: OnnxModel, challenger: object, **kwargs: object) -> ShadowEvaluator:
    kwargs.setdefault("timer", ticking(0.2, 0.3))
    return ShadowEvaluator(champion, challenger, window_s=60.0, start=NOW, **kwargs)  # type: ignore[arg-type]


def report(shadow: ShadowEvaluator, at: float = NOW + 60) -> ShadowReport:
    closed = shadow.close(at, device_id=DEVICE, group_id=GROUP, pipeline=PIPELINE)
    assert closed is not None
    return closed


def test_the_same_model_as_challenger_agrees_everywhere_and_only_the_champion_serves(
    spec: PipelineSpec, profile: SensorProfile, baseline_model: bytes, champion: OnnxModel
) -> None:
    same = load_model(baseline_model, "4", spec.features)
    shadow = shadow_of(champion, same)
    rows = readings(profile, 50)
    assert np.array_equal(shadow.predict_proba(rows), champion.predict_proba(rows))
    for row in rows[:10]:  # one record at a time, as a device scores
        shadow.predict_proba(row[None, :])
    window = report(shadow)
    assert (window.records, window.answered, window.agreements, window.challenger_errors) == (60, 60, 60, 0)
    assert window.mean_confidence_delta == 0.0 and window.latency_ratio == pytest.approx(1.5)
    assert (window.champion_version, window.challenger_version) == ("3", "4")


def test_another_real_model_is_measured_but_never_served(
    spec: PipelineSpec, profile: SensorProfile, rollout_model: bytes, champion: OnnxModel
) -> None:
    other = load_model(rollout_model, "4", spec.features)
    shadow = shadow_of(champion, other)
    rows = readings(profile, 400, seed=7)
    served = shadow.predict_proba(rows)
    assert np.array_equal(served, champion.predict_proba(rows))
    expected = np.mean(np.argmax(other.predict_proba(rows), 1) == np.argmax(champion.predict_proba(rows), 1))
    window = report(shadow)
    assert window.agreement == pytest.approx(expected)


def test_a_challenger_that_crashes_or_answers_nonsense_costs_errors_not_answers(
    profile: SensorProfile, champion: OnnxModel
) -> None:
    def crash(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("segfault in a custom op")

    rows = readings(profile, 20)
    for answer in (crash, lambda r: np.full((len(r), 3), np.nan), lambda r: np.ones((len(r), 2))):
        shadow = shadow_of(champion, Stand("4", champion.labels, answer))
        assert np.array_equal(shadow.predict_proba(rows), champion.predict_proba(rows))
        window = report(shadow)
        assert (window.records, window.answered, window.challenger_errors) == (20, 0, 20)
        assert window.agreement is None and window.mean_confidence_delta is None


def test_a_challenger_that_names_other_labels_disagrees(profile: SensorProfile, champion: OnnxModel) -> None:
    relabelled = Stand("4", list(reversed(champion.labels)), champion.predict_proba)
    shadow = shadow_of(champion, relabelled)
    rows = readings(profile, 300)
    shadow.predict_proba(rows)
    window = report(shadow)
    champion_labels = np.array(champion.labels)[np.argmax(champion.predict_proba(rows), 1)]
    middle = champion.labels[1]  # reversing three labels keeps the middle one
    assert window.agreements == int(np.sum(champion_labels == middle)) < 300


def test_windows_close_on_time_and_skip_what_a_sleeping_device_missed(
    profile: SensorProfile, champion: OnnxModel
) -> None:
    shadow = shadow_of(champion, champion)
    shadow.predict_proba(readings(profile, 5))
    assert (
        not shadow.due(NOW + 59) and shadow.close(NOW + 59, device_id=DEVICE, group_id=GROUP, pipeline=PIPELINE) is None
    )
    first = report(shadow, NOW + 60)
    assert (first.window_start, first.window_end) == ("2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z")
    assert shadow.close(NOW + 125, device_id=DEVICE, group_id=GROUP, pipeline=PIPELINE) is None  # no input: no report
    assert shadow.window_start == NOW + 120
    with pytest.raises(ValueError, match="window_s"):
        ShadowEvaluator(champion, champion, window_s=0, start=NOW)


def test_a_device_core_serves_the_champion_while_it_shadows(
    core: DeviceCore, champion: OnnxModel, profile: SensorProfile
) -> None:
    core.model = shadow_of(champion, champion)
    rows = readings(profile, 3)
    proba = core.score(rows)
    assert proba is not None and np.array_equal(proba, champion.predict_proba(rows))
    record = core.observe(rows[0], proba[0], NOW)
    assert record is not None and json.loads(record.value)["model_version"] == "3"


def test_a_shadow_order_brings_the_challenger_beside_the_model_served_and_the_next_order_ends_it(
    core: DeviceCore, spec: PipelineSpec, baseline_model: bytes, profile: SensorProfile
) -> None:
    onnx = ArtifactRef("http://models.example/v4.onnx", "b" * 64, 1234)
    wire = assignment_wire(model_version="0", shadow=ShadowOrder("4", onnx, 30.0), assignment_id="ro-1.s4")
    order, out = core.on_control(wire, 0)
    assert order is not None and order.assignment.shadow is not None and out == []  # the challenger is fetched
    served = core.model
    assert served is not None
    challenger = load_model(baseline_model, "4", spec.features)
    core.model_applied(order, ShadowEvaluator(served, challenger, window_s=30.0, start=NOW))
    rows = readings(profile, 5)
    assert np.array_equal(core.score(rows), served.predict_proba(rows)) and core.model_version == "0"
    assert core.shadow_due(NOW + 10) == []
    (sent,) = core.shadow_due(NOW + 30)
    shadowed = parse_shadow_report(sent.value)  # signing: test_a_signed_report_reads_back_...
    assert sent.kind == "shadow" and (shadowed.records, shadowed.agreements) == (5, 5)
    assert (shadowed.champion_version, shadowed.challenger_version) == ("0", "4")
    again, _ = core.on_control(assignment_wire(model_version="0", assignment_id="ro-1.se4"), 1)
    assert again is None and core.model is served and core.shadow_due(NOW + 90) == []


# --- the report on the wire ---------------------------------------------------------------------


def registry_of(device_id: str) -> DeviceRegistry:
    keys = Keyring.of([device_key(PIPELINE, device_id).public])
    return DeviceRegistry({device_id: Enrolment(device_id, GROUP, PIPELINE, keys, "2026-01-01T00:00:00.000Z")})


def test_a_signed_report_reads_back_and_a_forged_one_is_refused(profile: SensorProfile, champion: OnnxModel) -> None:
    shadow = shadow_of(champion, champion)
    shadow.predict_proba(readings(profile, 8))
    window = report(shadow)
    wire = window.to_wire(device_key(PIPELINE, DEVICE))
    assert parse_shadow_report(wire, registry_of(DEVICE)) == window
    with pytest.raises(RefusedReport, match="bad_signature"):
        parse_shadow_report(window.to_wire(INTRUDER), registry_of(DEVICE))
    assert parse_shadow_report(window.to_wire()) == window  # without a registry nothing is checked


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"records": -1}, "records"),
        ({"answered": 7}, "answered 7"),
        ({"agreements": 99}, "agreements 99"),
        ({"mean_confidence_delta": 3.0}, "mean_confidence_delta"),
        ({"challenger_version": "latest"}, "challenger_version"),
        ({"window_end": "2025-12-31T00:00:00Z"}, "window_end"),
        ({"colour": "blue"}, "unknown fields"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_field(
    change: dict[str, object], field: str, profile: SensorProfile, champion: OnnxModel
) -> None:
    shadow = shadow_of(champion, champion)
    shadow.predict_proba(readings(profile, 8))
    body = report(shadow).to_dict() | change
    with pytest.raises(BadShadowReport, match=field):
        parse_shadow_report(json.dumps(body).encode())


# --- the shadow gate --------------------------------------------------------------------------


def window_of(
    device: str,
    minute: int,
    *,
    agree: int = 60,
    errors: int = 0,
    delta: float = 0.0,
    ratio: float = 1.2,
    version: str = "4",
) -> ShadowReport:
    return ShadowReport(
        device_id=device,
        group_id=GROUP,
        pipeline=PIPELINE,
        champion_version="3",
        challenger_version=version,
        window_start=f"2026-01-01T00:{minute:02d}:00.000Z",
        window_end=f"2026-01-01T00:{minute + 1:02d}:00.000Z",
        records=60,
        answered=60 - errors,
        agreements=min(agree, 60 - errors),
        challenger_errors=errors,
        mean_confidence_delta=delta,
        champion_p95_ms=0.2,
        challenger_p95_ms=0.2 * ratio,
    )


POLICY = ShadowSpec(enabled=True, min_windows=3, min_agreement=0.95, max_latency_ratio=2.0, max_error_rate=0.01)


def test_the_gate_waits_for_enough_windows_counting_each_once() -> None:
    resent = [window_of("a", 0), window_of("a", 0), window_of("b", 0), window_of("c", 0, version="5")]
    decision = evaluate_shadow(resent, "4", POLICY)
    assert decision.state == "wait" and (decision.windows, decision.devices) == (2, 2)
    assert decision.reasons == ["2 of 3 device windows reported"]


def test_a_good_challenger_passes_with_its_numbers() -> None:
    decision = evaluate_shadow([window_of(d, m, agree=59) for d in "abc" for m in (0, 1)], "4", POLICY)
    assert decision.passed and decision.windows == 6 and decision.records == 360
    assert decision.agreement == round(59 / 60, 4) and decision.latency_ratio == 1.2 and decision.error_rate == 0.0
    assert decision.to_dict()["challenger_version"] == "4"


def test_a_challenger_that_disagrees_on_one_groups_inputs_is_stopped_before_it_serves() -> None:
    reports = [window_of(d, m, agree=40) for d in "abc" for m in (0, 1)]
    decision = evaluate_shadow(reports, "4", POLICY)
    assert decision.state == "fail" and "agreement with the champion 0.6667 < 0.95" in decision.reasons[0]


def test_slow_erring_or_unsure_challengers_fail_with_each_reason() -> None:
    reports = [window_of(d, 0, errors=3, ratio=3.0, delta=-0.3) for d in "abc"]
    reasons = " | ".join(evaluate_shadow(reports, "4", POLICY).reasons)
    assert "p95 latency 3.0x" in reasons and "error rate 0.05 > 0.01" in reasons
    assert "mean confidence -0.3" in reasons
    one_slow = [window_of("a", 0, ratio=9.0), window_of("b", 0), window_of("c", 0)]
    assert evaluate_shadow(one_slow, "4", POLICY).passed  # the median window decides latency
