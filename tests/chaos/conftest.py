"""The chaos tier's stack and fleet: a stack of its own (never the default one), a simulated fleet on a champion."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.chaos.harness import Chaos

from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack.config import REPO_ROOT, StackConfig

PIPELINE = "factory_maintenance"
DEVICES = int(os.environ.get("EDGELOOP_CHAOS_DEVICES", "40"))


# `make test` sets it for its reduced schedule: the stack it runs that on is the test run's own, and every
# fault restarts what it killed
ON_TEST_STACK = "EDGELOOP_CHAOS_ON_TEST_STACK"


def refuse_the_default_stack(cfg: StackConfig) -> None:
    if cfg.state_dir == (REPO_ROOT / ".edgeloop").resolve() and os.environ.get(ON_TEST_STACK) != "1":
        pytest.fail(
            f"the chaos tier kills services of its stack; {cfg.state_dir} is the default stack: "
            "run it with `make test-chaos` (its own EDGELOOP_STATE_DIR and ports)"
        )


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """The chaos stack, started when nothing of it runs, and left running: `make test-chaos` owns its lifetime.

    (The session-wide fixture stops a stack it had to start; a fault that leaves a service slow to answer
    its health check would then end the stack, and S3's objects with it, after every run.)
    """
    from tests.conftest import STACK_VARS

    from edgeloop.devstack import stack

    refuse_the_default_stack(StackConfig.from_env())
    if not any(s.running for s in stack.status()):  # a running stack is used as it is (see tests/conftest.py)
        stack.up(progress=False)
    env = stack.read_env_file()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield {k: env[k] for k in STACK_VARS if k in env}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def chaos(stack_env: dict[str, str], airflow_api: AirflowApi) -> Chaos:
    """The stack the faults go into; refused when it is the checkout's default stack (others work on that one)."""
    from edgeloop.demo import load_pipelines
    from edgeloop.devstack.stack import read_env_file
    from edgeloop.spec import load_all

    cfg = StackConfig.from_env()
    refuse_the_default_stack(cfg)
    spec = next(s for s in load_all(cfg.pipelines_dir).specs if s.name == PIPELINE)
    load_pipelines(airflow_api, [spec])
    return Chaos(cfg=cfg, env=read_env_file(cfg), spec=spec, api=airflow_api)


@pytest.fixture(scope="session")
def fleet_on_champion(chaos: Chaos) -> Iterator[dict[str, Any]]:
    """A simulated fleet of real agents that all run the champion (trained and rolled out first if there is none)."""
    from edgeloop.demo import (
        DemoSettings,
        StageWatcher,
        Timeline,
        bootstrap_first_model,
        champion,
        start_fleet,
        wait_until,
    )
    from edgeloop.devstack.stack import stop_process

    settings = DemoSettings(devices=DEVICES, first_model_timeout=1200)
    start_fleet(chaos.cfg, chaos.spec, settings, {**chaos.env})
    watcher = StageWatcher(chaos.api, chaos.spec, Timeline())
    watcher.baseline()
    if champion(chaos.env, chaos.spec) is None:
        # a small search: the faults need a champion on every device, not the best one (5 minutes less under load)
        run_id = f"chaos_first_model_{int(time.time())}"
        chaos.api.trigger(chaos.dag("train"), run_id, conf={"search_budget": 3}, note="chaos: first model")
        wait_until(lambda: champion(chaos.env, chaos.spec), settings.first_model_timeout, "a champion", watcher)
    first = bootstrap_first_model(chaos.api, chaos.env, chaos.spec, watcher, settings)
    # the first model's rollout goes on soaking after every device runs it: a fault's run starts after it ended

    def rollouts_done() -> bool:
        return not any(r["state"] in ("queued", "running") for r in chaos.api.runs(chaos.dag("rollout"), limit=10))

    wait_until(rollouts_done, 900, "the first model's rollout to end", watcher)
    yield {"champion": first, "devices": DEVICES}
    stop_process("fleet-simulator", chaos.cfg)
