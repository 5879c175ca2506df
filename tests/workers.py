"""Real Celery worker processes for integration tests.

Their output goes to a file, never to a pipe nobody reads while the test runs: a worker that fills a pipe's
64 KB buffer blocks on its next log line and looks like a stalled queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

from django.db import connection

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def worker_database_url() -> str:
    """The URL of the database the running test uses (the worker must see the same rows)."""
    db = connection.settings_dict
    host = quote(db["HOST"] or "", safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
    return f"postgres://{quote(db['USER'] or '')}{password}@{host}{port}/{db['NAME']}"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: IO[bytes] = field(repr=False)

    def poll(self) -> int | None:
        return self.process.poll()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> str:
        """Warm shutdown (SIGTERM), wait, and the output so far (shown when a test fails)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.seek(0)
        output = self.log.read().decode(errors="replace")
        self.log.close()
        return output


def start_worker(name: str, queues: str, **env: str) -> Worker:
    environment = dict(os.environ, DATABASE_URL=worker_database_url(), CELERY_TASK_ALWAYS_EAGER="false",
                       LOG_FORMAT="console", **env)  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Worker.stop
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "plgapp", "worker", "--queues", queues, "--pool", "solo",
         "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Worker(process, log)
