"""Processes the stack starts: known by pid and kernel start time, stopped with their process group."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from edgeloop.devstack.processes import (
    is_zombie,
    launch,
    log_tail,
    recorded_pid,
    recorded_stop_signal,
    start_in_session,
    start_ticks,
    stop_process_group,
)


def test_the_start_time_is_read_for_a_running_process_and_none_for_a_missing_one() -> None:
    with open(f"/proc/{os.getpid()}/stat") as stat:
        expected = int(stat.read().rsplit(")", 1)[1].split()[19])
    assert start_ticks(os.getpid()) == expected
    assert start_ticks(2**22 + 1) is None  # above Linux's pid_max


def test_a_launched_process_is_ours_until_it_is_stopped(tmp_path: Path) -> None:
    pid_file, log_file = tmp_path / "pids" / "sleeper.json", tmp_path / "logs" / "sleeper.log"
    command = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    pid = launch(command, env=os.environ, cwd=tmp_path, log_file=log_file, pid_file=pid_file)
    try:
        assert recorded_pid(pid_file) == pid
        assert os.getpgid(pid) == pid  # a session (and process group) of its own
        assert json.loads(pid_file.read_text())["command"] == command[:2]
        deadline = time.monotonic() + 30
        while log_tail(log_file, 5) != "up" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log_tail(log_file, 5) == "up"  # its output goes to the log
    finally:
        stop_process_group(pid, grace=0.5)
        os.waitpid(pid, 0)  # our child: reaped here, as init reaps the stack's services
    assert recorded_pid(pid_file) is None


def test_a_pid_reused_by_another_process_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "other.json"
    pid_file.write_text(json.dumps({"pid": os.getpid(), "start_ticks": (start_ticks(os.getpid()) or 0) + 1}))
    assert recorded_pid(pid_file) is None
    assert recorded_pid(tmp_path / "never-started.json") is None


def test_the_log_tail_keeps_the_last_lines_and_says_when_there_is_no_log(tmp_path: Path) -> None:
    log_file = tmp_path / "service.log"
    assert log_tail(log_file, 3) == "(no log)"
    log_file.write_text("".join(f"line {n}\n" for n in range(10)))
    assert log_tail(log_file, 3) == "line 7\nline 8\nline 9"


def test_a_service_is_stopped_with_the_signal_recorded_at_its_launch(tmp_path: Path) -> None:
    """PostgreSQL takes SIGINT as "fast shutdown"; the signal is kept with the pid, so `down` needs no config."""
    pid_file, log_file = tmp_path / "pids" / "db.json", tmp_path / "logs" / "db.log"
    program = (
        "import signal, sys, time\n"
        "def stop(number, frame):\n"
        "    print(signal.Signals(number).name, flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    pid = launch(
        [sys.executable, "-c", program],
        env=os.environ,
        cwd=tmp_path,
        log_file=log_file,
        pid_file=pid_file,
        stop_signal=signal.SIGINT,
    )
    try:
        deadline = time.monotonic() + 30
        while log_tail(log_file, 1) != "up" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorded_stop_signal(pid_file) == signal.SIGINT
    finally:
        stop_process_group(
            pid, grace=10, sig=recorded_stop_signal(pid_file), gone=lambda p: os.waitpid(p, os.WNOHANG) != (0, 0)
        )
    assert log_tail(log_file, 1) == "SIGINT"


def test_a_pid_file_from_before_stop_signals_were_recorded_means_sigterm(tmp_path: Path) -> None:
    pid_file = tmp_path / "old.json"
    pid_file.write_text(json.dumps({"pid": 1, "start_ticks": 0, "command": ["kafka"]}))
    assert recorded_stop_signal(pid_file) == signal.SIGTERM
    assert recorded_stop_signal(tmp_path / "missing.json") == signal.SIGTERM


def test_a_child_kept_by_its_caller_is_a_zombie_until_the_caller_reaps_it(tmp_path: Path) -> None:
    pid_file, log_file = tmp_path / "pids" / "quick.json", tmp_path / "logs" / "quick.log"
    process = start_in_session(
        [sys.executable, "-c", "pass"], env=os.environ, cwd=tmp_path, log_file=log_file, pid_file=pid_file
    )
    assert json.loads(pid_file.read_text())["pid"] == process.pid
    deadline = time.monotonic() + 30
    while not is_zombie(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_zombie(process.pid)  # exited, not reaped yet: the caller can still read its exit code
    assert recorded_pid(pid_file) is None  # and it no longer runs: a fault test can start the service again
    assert process.wait(timeout=30) == 0
    assert not is_zombie(process.pid)
    assert recorded_pid(pid_file) is None
