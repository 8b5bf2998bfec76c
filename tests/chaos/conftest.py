"""The chaos tier's stack and fleet: a stack of its own (never the default one), a simulated fleet on a champion."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from tests.chaos.harness import Chaos

from edgeloop.airflow_api import AirflowApi
from edgeloop.devstack.config import REPO_ROOT, StackConfig

PIPELINE = "factory_maintenance"
DEVICES = int(os.environ.get("EDGELOOP_CHAOS_DEVICES", "40"))


@pytest.fixture(scope="session")
def chaos(stack_env: dict[str, str], airflow_api: AirflowApi) -> Chaos:
    """The stack the faults go into; refused when it is the checkout's default stack (others work on that one)."""
    from edgeloop.demo import load_pipelines
    from edgeloop.devstack.stack import read_env_file
    from edgeloop.spec import load_all

    cfg = StackConfig.from_env()
    if cfg.state_dir == (REPO_ROOT / ".edgeloop").resolve():
        pytest.fail(
            f"the chaos tier kills services of its stack; {cfg.state_dir} is the default stack: "
            "run it with `make test-chaos` (its own EDGELOOP_STATE_DIR and ports)"
        )
    spec = next(s for s in load_all(cfg.pipelines_dir).specs if s.name == PIPELINE)
    load_pipelines(airflow_api, [spec])
    return Chaos(cfg=cfg, env=read_env_file(cfg), spec=spec, api=airflow_api)


@pytest.fixture(scope="session")
def fleet_on_champion(chaos: Chaos) -> Iterator[dict[str, Any]]:
    """A simulated fleet of real agents that all run the champion (trained and rolled out first if there is none)."""
    from edgeloop.demo import DemoSettings, StageWatcher, Timeline, bootstrap_first_model, start_fleet
    from edgeloop.devstack.stack import stop_process

    settings = DemoSettings(devices=DEVICES, first_model_timeout=1200)
    start_fleet(chaos.cfg, chaos.spec, settings, {**chaos.env})
    watcher = StageWatcher(chaos.api, chaos.spec, Timeline())
    watcher.baseline()
    first = bootstrap_first_model(chaos.api, chaos.env, chaos.spec, watcher, settings)
    yield {"champion": first, "devices": DEVICES}
    stop_process("fleet-simulator", chaos.cfg)
