"""Processes the local stack starts, each in its own session and known by pid and kernel start time.

A pid file (`<name>.json`) keeps the pid and the kernel start time of a process started here; the
process counts as ours only while both still match, so a stop never signals a process that merely
reused the pid. Stopping signals the whole process group: services that fork children end with them.
The pid file also names the signal that asks the service to stop (SIGTERM unless the service says
otherwise, e.g. SIGINT for PostgreSQL's fast shutdown).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The kernel start time of `pid` in clock ticks since boot, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime); the command name in field 2 may contain spaces, so split after ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def recorded_pid(pid_file: Path) -> int | None:
    """The pid recorded in `pid_file` if that very process still runs, else None (an exited process that waits
    for its parent to reap it, a zombie, does not run: a service killed and started again by the same parent)."""
    if not pid_file.exists():
        return None
    record = json.loads(pid_file.read_text())
    ticks = start_ticks(record["pid"])
    if ticks is None or ticks != record["start_ticks"] or is_zombie(int(record["pid"])):
        return None
    return int(record["pid"])


def recorded_stop_signal(pid_file: Path) -> signal.Signals:
    """The signal recorded at launch to ask the process to stop (SIGTERM for records that name none)."""
    try:
        name = json.loads(pid_file.read_text()).get("stop_signal", "SIGTERM")
    except (OSError, ValueError):
        return signal.SIGTERM
    return signal.Signals[name] if name in signal.Signals.__members__ else signal.SIGTERM


def is_zombie(pid: int) -> bool:
    """True when `pid` has exited and waits for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def launch(
    command: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_file: Path,
    pid_file: Path,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> int:
    """Start `command` in a session of its own, output appended to `log_file`; record it in `pid_file`; its pid."""
    return start_in_session(
        command, env=env, cwd=cwd, log_file=log_file, pid_file=pid_file, stop_signal=stop_signal
    ).pid


def start_in_session(
    command: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_file: Path,
    pid_file: Path,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """`launch`, for a caller that keeps the child: it can read the exit code (and should reap the child)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ticks = start_ticks(process.pid)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": process.pid, "start_ticks": ticks, "command": command[:2], "stop_signal": stop_signal.name}
    pid_file.write_text(json.dumps(record))
    return process


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_process_group(
    pid: int,
    grace: float,
    *,
    sig: signal.Signals = signal.SIGTERM,
    gone: Callable[[int], bool] = _group_gone,
    poll: float = 0.2,
    reap: float = 0.0,
) -> None:
    """`sig` to the process group of `pid` (a session leader started by `launch`), SIGKILL after `grace` s.

    `gone` says when to stop waiting (default: no process of the group is left); after a SIGKILL,
    wait up to `reap` seconds more for `gone` (a caller that reaps its own children).
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if gone(pid):
            return
        time.sleep(poll)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + reap
    while time.monotonic() < deadline and not gone(pid):
        time.sleep(poll)


def log_tail(log_file: Path, lines: int) -> str:
    """The last `lines` lines of a process's log, for error messages."""
    if not log_file.exists():
        return "(no log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
