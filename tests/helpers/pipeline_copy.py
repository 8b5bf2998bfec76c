"""A copy of a shipped pipeline added to the running stack for one test module, and removed after it."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.devstack.config import StackConfig
from edgeloop.devstack.pipelines import remove_pipeline, write_pipeline
from edgeloop.devstack.stack import read_env_file, stop_process
from edgeloop.spec import PipelineSpec


@dataclass(frozen=True)
class PipelineCopy:
    spec: PipelineSpec
    cfg: StackConfig  # the stack's config with a state folder of its own: the copy's fleet and bot pid files and logs
    env: dict[str, str]
    stack_cfg: StackConfig


@contextmanager
def pipeline_copy(api: Any, s3: Any, prefix: str, spec_data: Callable[[str], dict[str, Any]]) -> Iterator[PipelineCopy]:
    """Write `spec_data(<prefix>_<random>)` into the stack's pipelines folder; at the end stop the copy's fleet
    and bot, delete the spec and remove the pipeline (DAGs, topics, objects, registered model)."""
    stack_cfg = StackConfig.from_env()
    env = read_env_file(stack_cfg)
    target, spec = write_pipeline(stack_cfg.pipelines_dir, spec_data(f"{prefix}_{uuid.uuid4().hex[:6]}"))
    private = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    cfg = dataclasses.replace(stack_cfg, state_dir=private)
    try:
        yield PipelineCopy(spec, cfg, env, stack_cfg)
    finally:
        stop_process("fleet-simulator", cfg)
        stop_process("annotate-bot", cfg)
        target.unlink(missing_ok=True)
        remove_pipeline(api, s3, spec, env)
        shutil.rmtree(private, ignore_errors=True)
