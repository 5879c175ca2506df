"""Ingestion CPU per request, in one process: profile it, or compare two versions of the code back to back.

The HTTP benchmark (bench_ingest.py) measures what users see, but this machine's speed drifts over an hour by more
than most changes move it. This calls `plgapp.wsgi`'s application directly with the benchmark's own batches and
counts the CPU time per request of both sides: this process's Python (`time.process_time`) and the connection's
PostgreSQL backend (read from `/proc`, to 10 ms per block), so a change can be judged by alternating old and new
code every few dozen requests in the same process.

Run inside the embedded services:

    python -m plgapp.devservices run --instance prof -- python tests/bench/profile_ingest.py [--requests 1000]
    ... profile_ingest.py --profile 300          # cProfile of 300 requests, top functions by cumulative time
    ... profile_ingest.py --sql 300              # time per SQL statement (first words), from the client side
    ... profile_ingest.py --variants FILE.py     # A/B: FILE defines VARIANTS = {"name": install_function, ...}

Each variant's install function monkeypatches the code it changes (and must undo what another variant did); the
variants take turns every --block requests and the CPU per request of each is printed per round and in all.
The scratch database `<name>_prof` is created and filled with the benchmark's identity pool on the first run and
kept (--fresh recreates it).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import runpy
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_ingest import (
    BATCH_PATH,
    Workload,
    analyze,
    body_of,
    database_url_named,
    manage,
    proc_stat,
    recreate_database,
    wsgi_call,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per variant (default 1000)")
    parser.add_argument("--block", type=int, default=50, help="requests per turn of a variant (default 50)")
    parser.add_argument("--profile", type=int, default=0, help="cProfile this many requests instead")
    parser.add_argument("--dump", type=Path, help="with --profile: also save the statistics to this file (pstats)")
    parser.add_argument("--sql", type=int, default=0, help="time the SQL statements of this many requests instead")
    parser.add_argument("--variants", type=Path, help="a Python file defining VARIANTS = {name: install, ...}")
    parser.add_argument("--fresh", action="store_true", help="recreate the scratch database")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--bodies", type=int, default=200, help="distinct batches cycled through (default 200)")
    return parser.parse_args(argv)


def scratch_database(fresh: bool) -> tuple[str, str]:
    """(application URL, owner URL) of `<name>_prof`, created and migrated when missing or --fresh."""
    main_url = os.environ["DATABASE_URL"]
    owner_url = os.environ.get("DATABASE_OWNER_URL") or main_url
    name = f"{unquote(urlsplit(main_url).path.lstrip('/')) or 'plg'}_prof"
    owner_scratch = database_url_named(owner_url, name)
    exists = False
    if not fresh:
        try:
            psycopg2.connect(owner_scratch).close()
            exists = True
        except psycopg2.OperationalError:
            exists = False
    if not exists:
        recreate_database(owner_url, name)
    return database_url_named(main_url, name), owner_scratch


def ensure_tenant(env: dict[str, str], key_file: Path) -> str:
    if key_file.exists():
        return key_file.read_text().strip()
    manage(env, "migrate", "--noinput")
    tenant = json.loads(manage(env, "createtenant", "Prof", "prof", "--admin-email", "prof@example.com", "--json"))
    key = str(tenant["write_key"])
    key_file.write_text(key)
    return key


class Caller:
    """POSTs a body to the WSGI application in this process and checks the answer."""

    def __init__(self, application: Any, key: str) -> None:
        self.application = application
        self.key = key

    def __call__(self, body: bytes) -> None:
        status, payload = wsgi_call(
            self.application, "POST", BATCH_PATH, body=body,
            headers={"CONTENT_TYPE": "application/json", "HTTP_X_API_KEY": self.key},
            close=False,  # one connection throughout: its backend's CPU is read by pid (backend_cpu)
        )  # fmt: skip
        if not status.startswith("200"):
            raise SystemExit(f"request failed: {status} {payload[:500]!r}")


def cycle(bodies: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from bodies


def backend_cpu() -> float:
    """CPU seconds the PostgreSQL backend of this process's connection has used (it runs on this machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [(pid,)] = cursor.fetchall()
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_variants(call: Caller, bodies: Iterator[bytes], variants: dict[str, Callable[[], None]], args: Any) -> None:
    """Python CPU (this process), PostgreSQL CPU (the connection's backend) and wall time per request."""
    cpu: dict[str, float] = defaultdict(float)
    database: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    done: dict[str, int] = defaultdict(int)
    rounds = max(1, args.requests // args.block)
    for number in range(rounds):
        line = []
        order = list(variants) if number % 2 == 0 else list(reversed(variants))  # neither always goes first
        for name in order:
            variants[name]()
            call(next(bodies))  # the first request after a swap is not counted (caches of the other variant)
            began_database = backend_cpu()
            began_cpu, began_wall = time.process_time(), time.perf_counter()
            for _ in range(args.block):
                call(next(bodies))
            spent, took = time.process_time() - began_cpu, time.perf_counter() - began_wall
            spent_database = backend_cpu() - began_database
            cpu[name] += spent
            database[name] += spent_database
            wall[name] += took
            done[name] += args.block
            line.append(f"{name} {1000 * spent / args.block:.2f}+{1000 * spent_database / args.block:.2f}")
        print(f"round {number + 1:3d}: " + "  ".join(line) + " ms CPU/request (Python+PostgreSQL)", flush=True)
    for name in variants:
        print(
            f"{name}: {1000 * cpu[name] / done[name]:.3f} ms Python + {1000 * database[name] / done[name]:.3f} ms "
            f"PostgreSQL CPU/request, {1000 * wall[name] / done[name]:.3f} ms wall/request ({done[name]} requests)"
        )


@contextmanager
def statement_timer() -> Iterator[dict[str, list[float]]]:
    from django.db import connection

    times: dict[str, list[float]] = defaultdict(list)

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            times[" ".join(sql.split()[:6])[:90]].append(time.perf_counter() - began)

    with connection.execute_wrapper(wrapper):
        yield times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run under `python -m plgapp.devservices run --instance prof --`")
    url, owner_url = scratch_database(args.fresh)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATABASE_OWNER_URL": owner_url,
        "INGEST_RATE_LIMIT_PER_MINUTE": "100000000",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "STATIC_MANIFEST": "false",
    }
    key_file = Path(os.environ.get("PLG_LOCAL_DIR", Path(__file__).resolve().parents[2] / ".local")) / "prof.key"
    if args.fresh:
        key_file.unlink(missing_ok=True)
    key = ensure_tenant(env, key_file)
    os.environ.update(env)

    from plgapp.wsgi import application  # after the environment: settings read it

    call = Caller(application, key)
    workload = Workload(users=args.users, accounts=args.accounts, batch=100, seed=7, base_time=datetime.now(UTC))
    began = time.perf_counter()
    for batch in workload.identity_batches():
        call(body_of(batch))
    analyze(owner_url)  # as autovacuum would: without statistics the identity lookup picks slow plans
    print(f"identity pool: {args.users} users, {args.accounts} accounts ({time.perf_counter() - began:.1f} s)")
    bodies = cycle([body_of(batch) for batch in workload.batches(args.bodies)])
    for _ in range(50):  # warm-up
        call(next(bodies))

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.profile):
            call(next(bodies))
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    elif args.sql:
        with statement_timer() as times:
            began_cpu = time.process_time()
            for _ in range(args.sql):
                call(next(bodies))
            spent = time.process_time() - began_cpu
        print(f"{1000 * spent / args.sql:.3f} ms CPU/request (Python)")
        for statement, values in sorted(times.items(), key=lambda item: -sum(item[1])):
            print(f"{1000 * sum(values) / args.sql:7.3f} ms/request  {len(values) / args.sql:5.2f}x  {statement}")
    else:
        variants: dict[str, Callable[[], None]] = {"code": lambda: None}
        if args.variants:
            variants = runpy.run_path(str(args.variants))["VARIANTS"]
        run_variants(call, bodies, variants, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
