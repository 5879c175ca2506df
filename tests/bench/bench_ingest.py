"""Ingestion benchmark (issue 3): journy.io batches over HTTP through gunicorn vs a raw COPY of the same rows.

Run inside the embedded services (`make bench`):

    python -m plgapp.devservices run --instance bench -- python tests/bench/bench_ingest.py [--duration 120]

What it does, in one run:

1. creates a scratch database next to DATABASE_URL's (`<name>_bench`, dropped and recreated: every run starts
   from an empty events table), migrates it and creates a tenant with `manage.py createtenant --json`;
2. starts the production server, `gunicorn plgapp.wsgi --workers N` from the project root, so with the settings
   of gunicorn.conf.py (threaded workers, 2 threads each, as in the Procfile);
3. warms up: one pass of user-in-account events creates the whole identity pool (USERS users, ACCOUNTS
   accounts, user i in account i % ACCOUNTS), then a few seconds of load that is not measured;
4. measures: a load generator in another process (CONNECTIONS threads, one http.client connection each)
   posts pre-built batches of BATCH events to /api/journy/batch for DURATION seconds (two minutes unless
   told otherwise: the rate is printed per INTERVAL too, so a rate that is not sustained shows); a third of the
   events name a user, a third an account, a third a user in its account, all existing identities
   (each thread keeps its connection alive, as HTTP/1.1 SDK clients do); meanwhile it reads from /proc where the
   CPU went — gunicorn, PostgreSQL, the load process, the rest — and prints it per request with the machine's idle
   share: what a rate that misses its target would take, and whether the server or the machine is short;
5. stops gunicorn and COPYs as many equivalent rows (same metadata, resolved ids) into signals_event with
   psycopg2 copy_expert, COPY_BATCH rows per statement and transaction, and prints the ratio HTTP/COPY.

gunicorn and the load process are stopped on the way out, also on Ctrl-C, SIGTERM or an error.
Not a pytest test (pytest collects test_*.py only).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import psycopg2
import psycopg2.extensions

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
BATCH_PATH = "/api/journy/batch"

EVENT_NAMES = [
    "report_built", "dashboard_viewed", "export_downloaded", "invite_sent", "query_run",
    "alert_created", "integration_connected", "comment_added", "filter_applied", "chart_shared",
]  # fmt: skip
PLANS = ["free", "trial", "team", "business", "enterprise"]
SOURCES = ["web", "api", "cli", "ios", "android"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1"]
BROWSERS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
]
WORDS = [
    "revenue", "churn", "cohort", "funnel", "retention", "pipeline",
    "quota", "forecast", "region", "segment", "weekly", "monthly",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The workload: deterministic events (same seed -> same events in the load process and the COPY phase)


@dataclass(frozen=True)
class Workload:
    users: int
    accounts: int
    batch: int
    seed: int
    base_time: datetime  # events happened in the 7 days before this instant

    def user_id(self, n: int) -> str:
        return f"user-{n:06d}"

    def account_id(self, n: int) -> str:
        return f"acct-{n:05d}"

    def account_of(self, user: int) -> int:
        return user % self.accounts

    def event(self, rng: random.Random, *, kind: str | None = None, user: int | None = None) -> dict[str, Any]:
        """One track call of ~0.7 KB: 14 metadata keys (texts, numbers, booleans)."""
        kind = kind or rng.choice(("user", "account", "both"))
        user = rng.randrange(self.users) if user is None else user
        account = self.account_of(user) if kind == "both" else rng.randrange(self.accounts)
        identification: dict[str, Any] = {}
        if kind in ("user", "both"):
            identification["user"] = {"userId": self.user_id(user)}
        if kind in ("account", "both"):
            identification["account"] = {"accountId": self.account_id(account)}
        at = self.base_time - timedelta(seconds=rng.randrange(7 * 24 * 3600), microseconds=rng.randrange(10**6))
        project = rng.randrange(5000)
        metadata = {
            "plan": rng.choice(PLANS),
            "source": rng.choice(SOURCES),
            "region": rng.choice(REGIONS),
            "app_version": f"4.{rng.randrange(30)}.{rng.randrange(10)}",
            "page": f"/app/projects/{project}/reports/{rng.randrange(100_000)}?tab=overview&range=30d",
            "referrer": f"https://www.example.com/blog/{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randrange(999)}",
            "user_agent": rng.choice(BROWSERS),
            "report_title": " ".join(rng.choice(WORDS) for _ in range(6)).capitalize(),
            "session_id": f"{rng.getrandbits(128):032x}",
            "project_id": project,
            "duration_ms": rng.randrange(5, 20_000),
            "rows": rng.randrange(0, 2_000_000),
            "score": round(rng.random() * 100, 3),
            "success": rng.random() < 0.95,
        }
        return {
            "type": "track",
            "identification": identification,
            "name": rng.choice(EVENT_NAMES),
            "metadata": metadata,
            "triggeredAt": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }

    def batches(self, count: int) -> list[list[dict[str, Any]]]:
        """The `count` batches the load generator cycles through (the COPY phase replays the same events)."""
        rng = random.Random(self.seed)
        return [[self.event(rng) for _ in range(self.batch)] for _ in range(count)]

    def identity_batches(self) -> list[list[dict[str, Any]]]:
        """User-in-account events naming every user (and so every account) once: creates the pool."""
        rng = random.Random(self.seed - 1)
        events = [self.event(rng, kind="both", user=n) for n in range(self.users)]
        events += [self.event(rng, kind="account", user=n) for n in range(self.accounts)]  # any account left
        return [events[i : i + self.batch] for i in range(0, len(events), self.batch)]


def body_of(batch: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"calls": batch})


# ---------------------------------------------------------------------------------------------------
# The load generator (runs in its own process)


@dataclass
class LoadResult:
    seconds: float = 0.0
    requests: int = 0
    events: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    # (seconds since the window opened, events accepted) of each answer: the rate interval by interval
    accepted_at: list[tuple[float, int]] = field(default_factory=list)

    def rates(self, interval: float) -> list[float]:
        """Events/s in each full `interval` of the window (the last, partial one left out; a window shorter
        than one interval is one interval)."""
        interval = min(interval, self.seconds) or 1.0
        buckets = [0] * max(1, int(self.seconds // interval))
        for at, events in self.accepted_at:
            if int(at // interval) < len(buckets):
                buckets[int(at // interval)] += events
        return [events / interval for events in buckets]


def _post_loop(
    port: int,
    key: str,
    bodies: list[bytes],
    offset: int,
    window: tuple[float, float],
    start: threading.Barrier,
    out: LoadResult,
) -> None:
    opened, deadline = window
    headers = {"Content-Type": "application/json", "x-api-key": key}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start.wait()
    n = offset
    while time.perf_counter() < deadline:
        body = bodies[n % len(bodies)]
        n += 1
        began = time.perf_counter()
        try:
            conn.request("POST", BATCH_PATH, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # the next request() reconnects
            status, payload = 0, repr(exc).encode()
        answered = time.perf_counter()
        out.latencies_ms.append((answered - began) * 1000)
        out.requests += 1
        if status == 200:
            accepted = int(orjson.loads(payload)["data"]["accepted"])
            out.events += accepted
            out.accepted_at.append((answered - opened, accepted))
        else:
            out.errors += 1
            if len(out.error_samples) < 5:
                out.error_samples.append(f"{status}: {payload[:300]!r}")
    conn.close()


def run_load(port: int, key: str, bodies: list[bytes], connections: int, seconds: float) -> LoadResult:
    """CONNECTIONS threads post for SECONDS; the window ends when the last in-flight answer arrives."""
    start = threading.Barrier(connections + 1)
    outs = [LoadResult() for _ in range(connections)]
    began = time.perf_counter() + 0.05
    stride = max(1, len(bodies) // connections)
    threads = [
        threading.Thread(target=_post_loop, args=(port, key, bodies, i * stride, (began, began + seconds), start, out))
        for i, out in enumerate(outs)
    ]
    for thread in threads:
        thread.start()
    while time.perf_counter() < began:
        time.sleep(0.001)
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    total = LoadResult(seconds=time.perf_counter() - began)
    for out in outs:
        total.requests += out.requests
        total.events += out.events
        total.errors += out.errors
        total.latencies_ms += out.latencies_ms
        total.error_samples += out.error_samples
        total.accepted_at += out.accepted_at
    return total


def load_process_main(
    pipe: multiprocessing.connection.Connection, port: int, key: str, workload: Workload, bodies: int, connections: int
) -> None:
    """Entry point of the load process: build the bodies, then run each (seconds) request from the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (terminate) after its own cleanup
    payloads = [body_of(batch) for batch in workload.batches(bodies)]
    pipe.send(("ready", sum(map(len, payloads)) / (len(payloads) * workload.batch)))
    while True:
        command = pipe.recv()
        if command is None:
            return
        pipe.send(run_load(port, key, payloads, connections, float(command)))


# ---------------------------------------------------------------------------------------------------
# Setup: scratch database, tenant, gunicorn


def database_url_named(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def connect(url: str) -> psycopg2.extensions.connection:
    """libpq takes the postgres:// URL as is, including a %-encoded Unix socket directory as host."""
    return psycopg2.connect(url)


def analyze(owner_url: str) -> None:
    """ANALYZE a scratch database as its owner: what autovacuum does on a server that keeps running. The embedded
    server is started for each command, and its launcher does not visit a database created seconds before within
    the first minute or two; without statistics the planner takes every table for empty and picks plans that
    scan a tenant's rows per probe (a playbook evaluation took ~1 s instead of a few ms)."""
    conn = connect(owner_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("ANALYZE")
    finally:
        conn.close()


def recreate_database(admin_url: str, name: str, *, drop_only: bool = False) -> None:
    conn = connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop_only:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"manage.py {args[0]} failed")
    return result.stdout


def start_gunicorn(env: dict[str, str], port: int, workers: int, log: Any) -> subprocess.Popen[bytes]:
    command = [GUNICORN, "plgapp.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    # Own session: a Ctrl-C reaches only us, and we stop gunicorn in order (after the load process).
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {server.returncode} (see its log above)")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /healthz within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()  # gunicorn: graceful stop of the master and its workers
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the master and any stuck worker
        process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, key: str, body: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", BATCH_PATH, body=body, headers={"Content-Type": "application/json", "x-api-key": key})
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"warm-up batch failed: {response.status} {payload[:500]!r}")
    return dict(orjson.loads(payload))


# ---------------------------------------------------------------------------------------------------
# The COPY baseline


def wsgi_call(
    application: Any,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    close: bool = True,
) -> tuple[str, bytes]:
    """Call a WSGI application in this process as a gunicorn worker does (status line, body): for benchmarks that
    measure the application without HTTP. `headers` are CGI names (HTTP_X_API_KEY, CONTENT_TYPE). `close=False`
    skips the server's closing call, and with it Django's request_finished, which may recycle the connection."""
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **(headers or {}),
    }
    chunks = application(environ, lambda line, _headers, _exc=None: status.append(line))
    try:
        payload = b"".join(chunks)
    finally:
        if close:
            getattr(chunks, "close", lambda: None)()  # as a WSGI server does: Django's request_finished
    return status[0], payload


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(
    batches: list[list[dict[str, Any]]],
    tenant_id: int,
    users: dict[str, int],
    accounts: dict[str, int],
) -> Iterator[str]:
    """COPY text lines of the events the load generator sent, cycling through the same batches."""
    received = datetime.now(UTC).isoformat()
    while True:
        for batch in batches:
            for call in batch:
                identification = call["identification"]
                user = identification.get("user")
                account = identification.get("account")
                fields = [
                    str(tenant_id),
                    _copy_text(call["name"]),
                    str(users[user["userId"]]) if user else "\\N",
                    str(accounts[account["accountId"]]) if account else "\\N",
                    "\\N",
                    _copy_text(orjson.dumps(call["metadata"]).decode()),
                    call["triggeredAt"],
                    received,
                    "\\N",
                ]
                yield "\t".join(fields) + "\n"


@dataclass
class CopyResult:
    rows: int
    seconds: float


def run_copy(url: str, batches: list[list[dict[str, Any]]], tenant_slug: str, rows: int, copy_batch: int) -> CopyResult:
    conn = connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT id FROM plgapp_tenant WHERE slug = %s", [tenant_slug])
            row = cursor.fetchone()
            assert row is not None, f"no tenant {tenant_slug}"
            tenant_id = int(row[0])
            cursor.execute("SELECT external_id, id FROM accounts_enduser WHERE tenant_id = %s", [tenant_id])
            users = {str(external_id): int(pk) for external_id, pk in cursor.fetchall()}
            cursor.execute("SELECT external_id, id FROM accounts_account WHERE tenant_id = %s", [tenant_id])
            accounts = {str(external_id): int(pk) for external_id, pk in cursor.fetchall()}
        conn.commit()
        # The text is built before the clock starts: the baseline is what PostgreSQL can take in.
        lines = copy_rows(batches, tenant_id, users, accounts)
        chunks: list[bytes] = []
        for start in range(0, rows, copy_batch):
            chunks.append("".join(next(lines) for _ in range(min(copy_batch, rows - start))).encode())
        sql = (
            "COPY signals_event (tenant_id, name, end_user_id, account_id, device_id, properties, occurred_at, "
            "received_at, message_id) FROM STDIN"
        )
        began = time.perf_counter()
        with conn.cursor() as cursor:
            for chunk in chunks:
                cursor.copy_expert(sql, io.BytesIO(chunk))
                conn.commit()
        return CopyResult(rows=rows, seconds=time.perf_counter() - began)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------
# Main


@dataclass
class CpuSample:
    """CPU time (clock ticks) by role, and the machine's total and idle ticks, at one instant (Linux /proc)."""

    ticks: dict[str, int]
    total: int
    idle: int


def proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after "pid (name) ": state, parent pid, ...; user and system ticks at [11:13],
    those of reaped children at [13:15]."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def _processes() -> Iterator[tuple[int, int, int, str]]:
    """(pid, parent pid, CPU ticks, command line) of every process readable in /proc. The ticks are the process's own
    and those of its children it has reaped: PostgreSQL replaces a backend when Django closes a connection (after
    DB_CONN_MAX_AGE), and the backend's time then lives on in the postmaster's."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = proc_stat(entry.name)
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        yield int(entry.name), int(fields[1]), sum(int(value) for value in fields[11:15]), command


def cpu_sample(server_pid: int, load_pid: int | None) -> CpuSample | None:
    """Where the CPU goes: gunicorn (the master and its workers), PostgreSQL (every "postgres" process: backends,
    WAL writer, checkpointer), the load process, and the rest. None where there is no /proc."""
    if not Path("/proc/stat").exists():
        return None
    processes = list(_processes())
    children: dict[int, list[int]] = {}
    for pid, parent, _ticks, _command in processes:
        children.setdefault(parent, []).append(pid)
    gunicorn, stack = set(), [server_pid]
    while stack:
        pid = stack.pop()
        gunicorn.add(pid)
        stack.extend(children.get(pid, []))
    ticks = {"gunicorn": 0, "postgres": 0, "load": 0, "rest": 0}
    for pid, _parent, used, command in processes:
        role = (
            "gunicorn" if pid in gunicorn else "load" if pid == load_pid
            else "postgres" if command.startswith("postgres") or "/bin/postgres " in command else "rest"
        )  # fmt: skip
        ticks[role] += used
    jiffies = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return CpuSample(ticks=ticks, total=sum(jiffies), idle=jiffies[3] + jiffies[4])


def cpu_per_request(before: CpuSample | None, after: CpuSample | None, requests: int) -> tuple[dict[str, float], float]:
    """ms of CPU per request by role between two samples, and the share of the machine left idle."""
    if before is None or after is None or not requests or after.total <= before.total:
        return {}, float("nan")
    hertz = os.sysconf("SC_CLK_TCK")
    per_request = {role: (after.ticks[role] - before.ticks[role]) / hertz * 1000 / requests for role in after.ticks}
    return per_request, (after.idle - before.idle) / (after.total - before.total)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--connections", type=int, default=0, help="concurrent connections (default 2 x workers)")
    parser.add_argument(
        "--duration", type=float, default=120, help="measured seconds (default 120: a rate sustained for minutes)"
    )
    parser.add_argument("--interval", type=float, default=20, help="seconds per rate of the sustained check (20)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds of load first (default 3)")
    parser.add_argument("--batch", type=int, default=100, help="events per request (default 100)")
    parser.add_argument("--users", type=int, default=2000, help="user pool (default 2000)")
    parser.add_argument("--accounts", type=int, default=300, help="account pool (default 300)")
    parser.add_argument("--bodies", type=int, default=200, help="distinct pre-built batches (default 200)")
    parser.add_argument("--copy-batch", type=int, default=1000, help="rows per COPY statement (default 1000)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    args.connections = args.connections or 2 * args.workers
    return args


def on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop the load process and gunicorn


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, on_sigterm)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run under `python -m plgapp.devservices run --instance bench --`")
    main_url = os.environ["DATABASE_URL"]
    # The schema's owner creates the scratch database, migrates it and runs the raw COPY baseline (row-level
    # security refuses COPY to the application's role); the server connects as the application's role.
    owner_url = os.environ.get("DATABASE_OWNER_URL") or main_url
    scratch = f"{unquote(urlsplit(main_url).path.lstrip('/')) or 'plg'}_bench"
    url = database_url_named(main_url, scratch)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATABASE_OWNER_URL": database_url_named(owner_url, scratch),
        "INGEST_RATE_LIMIT_PER_MINUTE": "100000000",
        "SECURE_COOKIES": "false",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "STATIC_MANIFEST": "false",
        "DEBUG": "false",
        "DB_APPLICATION_NAME": "plg-bench",
    }
    workload = Workload(
        users=args.users, accounts=args.accounts, batch=args.batch, seed=args.seed, base_time=datetime.now(UTC)
    )
    say = print
    server: subprocess.Popen[bytes] | None = None
    loader: multiprocessing.process.BaseProcess | None = None
    pipe: multiprocessing.connection.Connection | None = None
    log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        say(f"scratch database {scratch}: recreating and migrating")
        recreate_database(owner_url, scratch)
        manage(env, "migrate", "--noinput")
        tenant = json.loads(
            manage(env, "createtenant", "Bench", "bench", "--admin-email", "bench@example.com", "--json")
        )
        key = str(tenant["write_key"])

        port = free_port()
        say(f"gunicorn plgapp.wsgi --workers {args.workers} on 127.0.0.1:{port} (log: {log.name})")
        server = start_gunicorn(env, port, args.workers, log)
        wait_ready(port, server)

        context = multiprocessing.get_context("spawn")
        pipe, child_pipe = context.Pipe()
        loader = context.Process(
            target=load_process_main,
            args=(child_pipe, port, key, workload, args.bodies, args.connections),
            name="bench-load",
            daemon=True,
        )
        loader.start()

        began = time.perf_counter()
        identity_batches = workload.identity_batches()
        for batch in identity_batches:
            post(port, key, body_of(batch))
        say(
            f"warm-up: created {args.users} users and {args.accounts} accounts "
            f"({len(identity_batches)} batches, {time.perf_counter() - began:.1f} s)"
        )
        if not pipe.poll(120):
            raise SystemExit("the load process did not start")
        _ready, bytes_per_event = pipe.recv()
        if args.warmup > 0:
            pipe.send(args.warmup)
            warm = pipe.recv()
            say(f"warm-up: {args.warmup:.0f} s of load, {warm.events / warm.seconds:,.0f} events/s (not counted)")

        say(
            f"measuring {args.duration:.0f} s: {args.connections} connections, batches of {args.batch} track calls "
            f"(~{bytes_per_event:.0f} B each as JSON), 1/3 user, 1/3 account, 1/3 user-in-account, "
            f"pool {args.users} users / {args.accounts} accounts (all existing)"
        )
        cpu_before = cpu_sample(server.pid, loader.pid)
        pipe.send(args.duration)
        load: LoadResult = pipe.recv()
        cpu, idle = cpu_per_request(cpu_before, cpu_sample(server.pid, loader.pid), load.requests)
        pipe.send(None)
        loader.join(10)
        stop_process(server)
        server = None

        http_rate = load.events / load.seconds
        lat = load.latencies_ms
        say("")
        say(f"HTTP  {args.workers} gunicorn workers, {args.connections} connections, {load.seconds:.1f} s")
        say(f"  requests   {load.requests:,} ({load.requests / load.seconds:,.1f}/s), errors {load.errors}")
        say(f"  events     {load.events:,}  ->  {http_rate:,.0f} events/s")
        say(
            f"  latency    p50 {percentile(lat, 50):.1f} ms, p95 {percentile(lat, 95):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=float('nan')):.1f} ms, "
            f"mean {statistics.fmean(lat) if lat else float('nan'):.1f} ms"
        )
        rates = load.rates(args.interval)
        each = ", ".join(f"{rate:,.0f}" for rate in rates)
        say(
            f"  sustained  events/s per {min(args.interval, load.seconds):.0f} s: {each} "
            f"(lowest {min(rates):,.0f}, {min(rates) / http_rate:.0%} of the mean)"
        )
        if cpu:
            parts = ", ".join(f"{role} {ms:.2f}" for role, ms in cpu.items())
            say(f"  CPU        ms per request: {parts} (total {sum(cpu.values()):.2f}); machine idle {idle:.1%}")
        for sample in load.error_samples:
            say(f"  error      {sample}")

        rows = load.events or args.batch * args.bodies
        batches = workload.batches(args.bodies)
        copy = run_copy(env["DATABASE_OWNER_URL"], batches, str(tenant["tenant"]), rows, args.copy_batch)
        copy_rate = copy.rows / copy.seconds
        say(f"COPY  {copy.rows:,} rows in batches of {args.copy_batch} (one connection): {copy.seconds:.2f} s")
        say(f"  rate       {copy_rate:,.0f} rows/s")
        say(f"RATIO HTTP/COPY {http_rate / copy_rate:.1%}")
        target = http_rate >= 20_000 and http_rate / copy_rate >= 0.20
        say(f"TARGET (>= 20,000 events/s and >= 20% of COPY): {'met' if target else 'NOT met'}")
        if args.json:
            figures = {
                "workers": args.workers,
                "connections": args.connections,
                "seconds": round(load.seconds, 2),
                "requests": load.requests,
                "events": load.events,
                "errors": load.errors,
                "events_per_s": round(http_rate),
                "events_per_s_by_interval": [round(rate) for rate in rates],
                "p50_ms": round(percentile(lat, 50), 1),
                "p95_ms": round(percentile(lat, 95), 1),
                "p99_ms": round(percentile(lat, 99), 1),
                "copy_rows_per_s": round(copy_rate),
                "ratio": round(http_rate / copy_rate, 4),
                "cpu_ms_per_request": {role: round(ms, 2) for role, ms in cpu.items()},
                "idle": round(idle, 3) if cpu else None,
            }
            say(json.dumps(figures))
        return 0 if load.errors == 0 else 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if loader is not None and loader.is_alive():
            loader.terminate()
            loader.join(10)
        if pipe is not None:
            pipe.close()
        stop_process(server)
        log.close()
        if server is not None and server.returncode not in (0, None):
            sys.stderr.write(Path(log.name).read_text()[-3000:])
        Path(log.name).unlink(missing_ok=True)
        if not args.keep_db:
            try:
                recreate_database(owner_url, scratch, drop_only=True)
            except psycopg2.Error as exc:
                say(f"could not drop the scratch database {scratch}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
