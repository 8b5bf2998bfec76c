"""The rollout policy on the real broker with real agent processes: shares, pacing, timeouts, late joiners.

Given 16 `edgeloop.edge.agent` processes of one group (plant-north) on the stack's Kafka, on
topics of their own, serving the baseline model "0", and a model's ONNX file in the stack's S3,
the tests below run in order on that fleet, each a rollout job's wave (`rollout.job.run_wave_job`):

1. a wave with a share of the group orders only the share's devices (device-targeted orders);
   a re-run orders the same devices with the same assignment ids; the gate reads only them;
2. a paced wave orders every device by `rollout.rate` with an exponential step-up (the control
   topic's record timestamps show both), then orders the group (its device twin);
3. a device that is down when its group is ordered counts as `timed_out` after
   `rollout.device_timeout`, in the job's tally, its abort decision and the gate's reading, and the
   gate's success threshold passes or stops the wave on the share that applied;
4. that device, back online, and a device enrolled after the order both get the group's current
   model from the group's order on the control topic;
5. a paced wave of a file every device refuses stops once the abort criteria's minimum of devices
   executed and failure threshold are reached: no further batch, no group order;
6. while the pipeline's rollouts are paused (`rollout.pause`, a flag in its storage) a wave sends
   no order; once resumed it orders its devices;
7. devices refuse orders signed by a key they do not trust and report it without naming the order (a
   forged message may carry a real order's id), so the job counts them `timed_out` after
   `rollout.device_timeout`, never `rejected` (counted from refusals of signed orders: unit tests);
8. `edgeloop rollout-job` in a job pod's environment (connections as `AIRFLOW_CONN_*`, no presigned
   pause URL) reads the pause flag with the S3 connection: no order until it is resumed.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import (
    REPO,
    AgentProcess,
    delete_pipeline_topics,
    delete_prefix,
    replay_agent,
    upload_artifact,
    wait_until,
)

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.contract.keys import SIGNING_KEY_ENV, Keyring, Signer
from edgeloop.fleet.control import read_device_states
from edgeloop.fleet.topics import read_topic
from edgeloop.kafka import ensure_pipeline_topics
from edgeloop.rollout.job import assignment_id_for, read_group_readings, run_kafka_wave, run_wave_job
from edgeloop.rollout.pause import pause_rollouts, pause_state, pause_url, paused_by_url, resume_rollouts
from edgeloop.spec import AbortSpec, ExponentialRate, PipelineSpec, PolicyWave, RateSpec
from edgeloop.training.sensors import SensorProfile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "plant-north"
FLEET = 16


@dataclass
class Fleet:
    spec: PipelineSpec
    kafka: dict[str, Any]
    key: Signer
    ref: ArtifactRef
    agents: list[AgentProcess]
    folder: Path
    profile: SensorProfile
    baseline: Path

    def reported(self) -> dict[str, dict[str, Any]]:
        states = read_device_states(self.spec, self.kafka, timeout=30)
        return {d: dict(s.reported) for d, s in states.devices.items()}

    def versions(self) -> dict[str, Any]:
        return {d: r.get("model_version") for d, r in self.reported().items()}

    def wave(self, spec: PipelineSpec, version: str, rollout_id: str, wave: int = -1) -> dict[str, Any]:
        return run_wave_job(
            spec,
            self.kafka,
            self.key,
            GROUP,
            version,
            rollout_id,
            artifacts=lambda _version: self.ref,
            trusted_keys=Keyring.of([self.key.public]),
            wave=wave,
        )

    def control(self, since_ms: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
        """(timestamp ms, key, order) of every control record from `since_ms` on."""
        records = read_topic(self.kafka, self.spec.topic("control"), since_ms=since_ms, timeout=30)
        return [(r.timestamp_ms, (r.key or b"").decode(), json.loads(r.value or b"{}")) for r in records]

    def add_agent(self, device: str) -> AgentProcess:
        """Enrol a device of the group and write its agent's config (not started)."""
        agent = replay_agent(
            self.spec,
            self.kafka,
            self.key,
            GROUP,
            device,
            self.folder,
            self.profile,
            self.baseline,
            seed=len(self.agents),
        )
        self.agents.append(agent)
        return agent


def with_rollout(spec: PipelineSpec, **policy: Any) -> PipelineSpec:
    return spec.model_copy(
        update={"rollout": spec.rollout.model_copy(update={"timeout": timedelta(seconds=90), **policy})}
    )


@pytest.fixture(scope="module")
def fleet(
    demo_spec: PipelineSpec,
    profile: SensorProfile,
    baseline_model: bytes,
    rollout_model: bytes,
    kafka_config: dict[str, Any],
    s3_client: Any,
    stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    run = uuid.uuid4().hex[:10]
    bucket, prefix = stack_env.get("EDGELOOP_BUCKET", "edgeloop"), f"it/rollout-controls/{run}"
    spec = demo_spec.model_copy(
        update={
            "topics": demo_spec.topics.model_copy(update={"prefix": f"it_rollout_ctl_{run}"}),
            "storage": demo_spec.storage.model_copy(update={"bucket": bucket, "prefix": f"{prefix}/lake"}),
        }
    )
    ensure_pipeline_topics(spec, kafka_config)
    folder = tmp_path_factory.mktemp("rollout-controls")
    baseline = folder / "baseline-v0.onnx"
    baseline.write_bytes(baseline_model)
    ref = upload_artifact(s3_client, bucket, prefix, rollout_model)
    here = Fleet(spec, dict(kafka_config), Signer.generate(), ref, [], folder, profile, baseline)
    for index in range(FLEET):
        here.add_agent(f"{GROUP}-{index:05d}")
    for agent in here.agents:
        agent.start()
    try:
        wait_until(
            f"{FLEET} agents on model 0 (device-state)",
            lambda: list(here.versions().values()).count("0") == FLEET,
            timeout=180,
            interval=2,
        )
        yield here
    except BaseException:
        for agent in here.agents:
            print(f"--- {agent.device_id} (alive={agent.alive})\n{agent.log_tail()}")
        raise
    finally:
        for agent in here.agents:
            agent.ensure_stopped()
        delete_pipeline_topics(spec, kafka_config)
        delete_prefix(s3_client, bucket, prefix + "/")


def test_a_share_wave_orders_only_its_devices_and_a_rerun_orders_the_same(fleet: Fleet) -> None:
    spec = with_rollout(
        fleet.spec, canary_groups=[], waves=[PolicyWave(groups=[GROUP], share=0.25), PolicyWave(groups=[GROUP])]
    )
    started = time.time()

    first = fleet.wave(spec, "1", "ro-share", wave=0)

    chosen = first["devices"]
    assert len(chosen) == 4 and first["share"] == {"share": 0.25, "members": FLEET, "selected": 4}
    assert first["progress"]["applied"] == 4 and not first["stopped"]
    versions = fleet.versions()
    assert sorted(d for d, v in versions.items() if v == "1") == sorted(chosen)
    assert list(versions.values()).count("0") == FLEET - 4
    orders = fleet.control(int(started * 1000))
    prefix = assignment_id_for("ro-share", GROUP, "1")
    assert {key for _, key, _ in orders} == {f"device:{d}" for d in chosen}, "no group order, no other device"
    assert {o["id"] for _, _, o in orders} == {f"{prefix}.{d}" for d in chosen}

    # The gate reads only the wave's devices.
    trusted = Keyring.of([fleet.key.public])
    ids = {GROUP: prefix}
    (share_reading,), _ = read_group_readings(
        spec, fleet.kafka, [GROUP], "1", ids, 30, trusted, devices={GROUP: chosen}
    )
    (group_reading,), _ = read_group_readings(spec, fleet.kafka, [GROUP], "1", ids, 30, trusted)
    assert (share_reading.devices, share_reading.applied) == (4, 4)
    assert (group_reading.devices, group_reading.applied) == (FLEET, 4)

    # A re-run (a retried task) orders the same devices with the same ids; they apply nothing new.
    again = fleet.wave(spec, "1", "ro-share", wave=0)
    assert again["devices"] == chosen and again["progress"]["applied"] == 4
    reorders = fleet.control(int(started * 1000))
    assert sorted(o["id"] for _, _, o in reorders) == sorted(2 * [f"{prefix}.{d}" for d in chosen])
    assert sorted(d for d, v in fleet.versions().items() if v == "1") == sorted(chosen)


def max_in_window(stamps_ms: list[int], window_ms: int) -> int:
    """The most records any window of `window_ms` holds."""
    stamps = sorted(stamps_ms)
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_paced_wave_holds_the_rate_and_steps_up_exponentially(fleet: Fleet) -> None:
    rate = RateSpec(
        per_minute=60, exponential=ExponentialRate(base_per_minute=30, increment_factor=2, step_up_after_devices=4)
    )
    spec = with_rollout(fleet.spec, rate=rate)
    started = time.time()

    result = fleet.wave(spec, "2", "ro-paced")

    assert result["progress"]["applied"] == FLEET and not result["stopped"]
    assert [b["per_minute"] for b in result["batches"]][:5] == [30, 30, 30, 30, 60]
    orders = [(at, key, o) for at, key, o in fleet.control(int(started * 1000)) if key.startswith("device:")]
    stamps = [at for at, _, _ in orders]
    assert len(orders) == FLEET
    assert max_in_window(stamps, 60_000) <= rate.per_minute
    assert max_in_window(stamps, 10_000) <= 11, "60 a minute: at most 11 orders in any 10 s"
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 1.9 for gap in gaps[:3]), f"30 a minute at first: {gaps}"
    assert all(gap >= 0.9 for gap in gaps[3:]), f"never faster than 60 a minute: {gaps}"
    assert statistics.median(gaps[3:]) < 1.5, f"60 a minute after 4 devices (a slow read may delay one): {gaps}"
    # The whole group's wave ends with the group's order: its device twin for devices that come later.
    group_orders = [o for _, key, o in fleet.control(int(started * 1000)) if key == f"group:{GROUP}"]
    assert [o["id"] for o in group_orders] == [assignment_id_for("ro-paced", GROUP, "2")]
    assert set(fleet.versions().values()) == {"2"}


def test_a_device_that_does_not_apply_in_time_times_out_and_later_gets_the_groups_model(fleet: Fleet) -> None:
    spec = with_rollout(
        fleet.spec,
        device_timeout=timedelta(seconds=15),
        abort=AbortSpec(failure_threshold_pct=5, min_executed=10, failure_types=["timed_out"]),
    )
    down = fleet.agents[3]
    down.terminate()
    assert down.wait(60) == 0
    started = time.time()

    result = fleet.wave(spec, "3", "ro-timeout")

    failed = result["progress"]["failed"]
    assert list(failed) == [down.device_id] and "no apply within 15 s" in failed[down.device_id]
    assert result["progress"]["executions"]["failed_by_type"]["timed_out"] == 1
    assert result["progress"]["applied"] == FLEET - 1
    assert result["abort"]["abort"] and result["abort"]["failures"] == 1, result["abort"]
    trusted = Keyring.of([fleet.key.public])
    ids = {GROUP: assignment_id_for("ro-timeout", GROUP, "3")}
    (reading,), _ = read_group_readings(
        spec, fleet.kafka, [GROUP], "3", ids, time.time() - started, trusted, device_timeout_s=15
    )
    assert (reading.applied, reading.failed, reading.timed_out) == (FLEET - 1, 0, 1)
    # the success threshold decides the wave on the share of its devices that applied (15 of 16, 0.94)
    from edgeloop.rollout.gate import evaluate_gate

    only_applied = spec.rollout.thresholds.model_copy(
        update={"max_offline_ratio": 1.0, "max_error_rate": 1.0, "min_mean_confidence": 0.0}
    )
    enough = evaluate_gate([reading], only_applied, 1.0, True, success_threshold=0.9)
    short = evaluate_gate([reading], only_applied, 1.0, True, success_threshold=0.95)
    assert enough.state == "pass" and enough.policy["success"][GROUP]["met"], enough
    assert short.state == "fail" and any("success threshold not met" in r for r in short.reasons), short

    # Back online, the device reads the group's order it missed; a device enrolled now reads it too.
    down.start()
    joiner = fleet.add_agent(f"{GROUP}-late-1")
    joiner.start()
    versions = wait_until(
        "the returning and the new device on model 3",
        lambda: (v := fleet.versions()).get(down.device_id) == "3" and v.get(joiner.device_id) == "3" and v,
        timeout=120,
        interval=2,
    )
    assert set(versions.values()) == {"3"} and len(versions) == FLEET + 1


def test_the_abort_criteria_stop_a_paced_wave_after_the_minimum_executed(fleet: Fleet) -> None:
    spec = with_rollout(
        fleet.spec,
        rate=RateSpec(per_minute=30),
        abort=AbortSpec(failure_threshold_pct=50, min_executed=3, failure_types=["failed"]),
        max_failure_ratio=1.0,
    )
    bad = ArtifactRef(fleet.ref.url, "0" * 64, fleet.ref.size)  # every device refuses a file that is not this one
    started = time.time()

    result = run_wave_job(
        spec,
        fleet.kafka,
        fleet.key,
        GROUP,
        "4",
        "ro-abort",
        artifacts=lambda _v: bad,
        trusted_keys=Keyring.of([fleet.key.public]),
    )

    ordered = sum(b["devices"] for b in result["batches"])
    print(f"\nabort: {ordered} of {len(fleet.agents)} devices ordered, {result['abort']}")
    assert result["stopped"] and result["abort"]["abort"] and result["abort"]["executed"] >= 3
    assert result["abort"]["failure_pct"] >= 50
    assert 3 <= ordered <= 8, f"the wave stopped soon after the third failure: {result['batches']}"
    orders = [key for _, key, o in fleet.control(int(started * 1000)) if o["id"].startswith("ro-abort.")]
    assert len(orders) == ordered and all(key.startswith("device:") for key in orders), "no group order"
    versions = fleet.versions()
    assert set(versions.values()) == {"3"}, "a refused file leaves every device on the model it runs"


def test_a_paused_rollout_sends_no_order_until_it_is_resumed(fleet: Fleet, s3_client: Any) -> None:
    spec = with_rollout(fleet.spec, rate=RateSpec(per_minute=60))
    paused = paused_by_url(pause_url(s3_client, spec, 600))
    assert not paused() and pause_state(s3_client, spec) is None
    pause_rollouts(s3_client, spec, "ops", "line stop")
    assert paused() and (pause_state(s3_client, spec) or {})["reason"] == "line stop"
    started = time.time()
    results: list[dict[str, Any]] = []

    def wave() -> None:
        ident = assignment_id_for("ro-pause", GROUP, "5")
        results.append(
            run_kafka_wave(
                spec,
                fleet.kafka,
                fleet.key,
                GROUP,
                "5",
                ident,
                timeout_s=120,
                artifacts=lambda _v: fleet.ref,
                share=0.25,
                rollout_id="ro-pause",
                paused=paused,
            )
        )

    job = threading.Thread(target=wave, name="paused-wave")
    job.start()
    time.sleep(8)
    held = [o for _, _, o in fleet.control(int(started * 1000)) if o["id"].startswith("ro-pause.")]
    assert not held, "no order while paused"
    resumed = time.time()
    resume_rollouts(s3_client, spec)
    job.join(150)

    (result,) = results
    orders = [(at, o) for at, _, o in fleet.control(int(started * 1000)) if o["id"].startswith("ro-pause.")]
    assert len(orders) == len(result["devices"]) == 5 and all(at >= resumed * 1000 - 1000 for at, _ in orders)
    (pause,) = result["pauses"]
    assert pause["resumed"] and pause["held_s"] >= 7 and pause["ordered"] == 0
    assert result["progress"]["applied"] == 5
    versions = fleet.versions()
    assert sorted(d for d, v in versions.items() if v == "5") == sorted(result["devices"])


def test_orders_signed_by_a_key_the_devices_do_not_trust_are_refused_and_time_out_never_counted_rejected(
    fleet: Fleet,
) -> None:
    """Each device refuses such an order and says so in a signed report, but without naming the order (anyone
    who can write to the control topic can write a real order's id): the job counts the devices as timed out
    at `device_timeout`, never as refusals it could be made to see by a forged message."""
    spec = with_rollout(
        fleet.spec,
        canary_groups=[],
        waves=[PolicyWave(groups=[GROUP], share=0.25), PolicyWave(groups=[GROUP])],
        device_timeout=timedelta(seconds=15),
        abort=AbortSpec(failure_threshold_pct=50, min_executed=4),
        max_failure_ratio=1.0,
    )
    before = fleet.versions()
    started = time.time()

    result = run_wave_job(
        spec,
        fleet.kafka,
        Signer.generate(),
        GROUP,
        "6",
        "ro-untrusted",
        artifacts=lambda _v: fleet.ref,
        trusted_keys=Keyring.of([fleet.key.public]),
        wave=0,
    )

    took = time.time() - started
    chosen = result["devices"]
    tally = result["progress"]["executions"]
    assert tally["failed_by_type"]["rejected"] == 0 and tally["failed_by_type"]["timed_out"] >= 4, tally
    assert result["abort"]["abort"], result["abort"]
    assert took >= 15, f"the devices count only once their timeout passed ({took:.1f} s)"
    order_ids = {f"{assignment_id_for('ro-untrusted', GROUP, '6')}.{device}" for device in chosen}
    records = read_topic(fleet.kafka, spec.topic("errors"), since_ms=int(started * 1000), timeout=30)
    reports = [json.loads(r.value or b"{}") for r in records]
    about = [r for r in reports if r.get("kind") == "bad_control" and any(repr(i) in r["message"] for i in order_ids)]
    assert {r["device_id"] for r in about} == set(chosen), about
    assert all("is not a trusted key" in r["message"] and r.get("control_id") is None for r in about)
    assert fleet.versions() == before, "a refused order changes nothing on the device"


def test_the_job_as_a_pod_runs_it_reads_the_pause_flag_with_the_s3_connection(
    fleet: Fleet, s3_client: Any, tmp_path: Path
) -> None:
    import yaml

    from edgeloop.rollout.cli import ARTIFACT_ENV

    waves = [PolicyWave(groups=[GROUP], share=0.25), PolicyWave(groups=[GROUP]), PolicyWave(groups="all")]
    spec = with_rollout(fleet.spec, canary_groups=[], waves=waves)
    data = spec.model_dump(mode="json", by_alias=True)
    for group in data["groups"]:
        group.pop("wave", None)  # the policy's waves order the rollout: a spec file leaves the numbers out
    (tmp_path / f"{spec.name}.yaml").write_text(yaml.safe_dump(data))
    pod_env = {  # what the pod spec gives the job: Secret references resolved by Kubernetes, no pause URL
        "PATH": os.environ["PATH"],
        "AIRFLOW_HOME": str(tmp_path / "airflow"),  # the image's own; nothing of the stack's Airflow
        "PYTHONPATH": str(REPO / "include"),
        "EDGELOOP_PIPELINES_DIR": str(tmp_path),
        SIGNING_KEY_ENV: fleet.key.private_pem().decode(),
        "AIRFLOW_CONN_EDGELOOP_KAFKA": os.environ["AIRFLOW_CONN_EDGELOOP_KAFKA"],
        "AIRFLOW_CONN_EDGELOOP_S3": os.environ["AIRFLOW_CONN_EDGELOOP_S3"],
        ARTIFACT_ENV: json.dumps(fleet.ref.to_dict()),  # here in place of the MLflow connection: no registry model
    }
    args = ["rollout-job", "--pipeline", spec.name, "--group", GROUP, "--model-version", "8"]
    pause_rollouts(s3_client, spec, "ops", "pod pause")
    started = time.time()
    job = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli", *args, "--wave", "0", "--rollout-id", "ro-pod"],
        env=pod_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(12)
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert not [o for _, _, o in fleet.control(int(started * 1000)) if o["id"].startswith("ro-pod.")]
        resumed = time.time()
        resume_rollouts(s3_client, spec, "ops", "pod resume")
        out, err = job.communicate(timeout=150)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        resume_rollouts(s3_client, spec)

    assert job.returncode == 0, err[-2000:]
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    (pause,) = result["pauses"]
    # the job's start (imports, the first device-state read) takes part of the 12 s before the resume
    assert pause["resumed"] and pause["held_s"] >= 3 and pause["ordered"] == 0
    orders = [(at, o) for at, _, o in fleet.control(int(started * 1000)) if o["id"].startswith("ro-pod.")]
    assert len(orders) == len(result["devices"]) >= 4 and all(at >= resumed * 1000 - 1000 for at, _ in orders)
    assert result["progress"]["applied"] == len(result["devices"])
