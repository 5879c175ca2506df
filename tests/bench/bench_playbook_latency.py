"""Playbook benchmark (issue 5), part 2: how long from a qualifying event to its action, with a real worker.

Run inside the embedded services (`make bench`, or on its own):

    python -m plgapp.devservices run --instance bench -- python tests/bench/bench_playbook_latency.py

A scratch database `<name>_latency` gets a tenant with ACCOUNTS trial accounts (one user each) and an active
account playbook whose entry reads an event count — `report_created` at least once today, in a Trial — with
one `log` action. gunicorn (2 workers) serves the ingestion API and one Celery worker (prefork, 2 processes,
every queue) runs the pipeline as in production: ingestion marks the account dirty → the processor recomputes
its rollups, rescoring and the affected playbooks → the evaluation enrolls it and queues the action → the
executor runs it. For EVENTS accounts, one at a time at RATE per second, the benchmark POSTs the event
(`/api/journy/batch`) and reads, from the database, when the action run was queued (created) and executed
(completed): latency = those times minus the moment the POST was sent. Prints p50/p95/max of both.

Not a pytest test (pytest collects test_*.py only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_ingest import (  # noqa: E402
    BATCH_PATH,
    database_url_named,
    free_port,
    manage,
    percentile,
    recreate_database,
    start_gunicorn,
    stop_process,
    wait_ready,
)

PLAYBOOK: dict[str, Any] = {
    "object": "account",
    "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                      {"event": "report_created", "of": "account", "within_days": 1, "op": "gte", "value": 1}]},
    "actions": [{"id": "note", "type": "log", "params": {"message": "qualified"}}],
    "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
    "timeout": {"days": 14},
}  # fmt: skip


def start_worker(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "plgapp", "worker", "--queues",
               "ingest,scoring,playbooks,actions,celery", "--concurrency", "2", "--without-gossip",
               "--without-mingle", "--loglevel", os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING")]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)


def post(port: int, key: str, calls: list[dict[str, Any]]) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", BATCH_PATH, body=orjson.dumps({"calls": calls}),
                     headers={"Content-Type": "application/json", "x-api-key": key})  # fmt: skip
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=1000, help="trial accounts in the tenant (default 1000)")
    parser.add_argument("--events", type=int, default=200, help="qualifying events sent (default 200)")
    parser.add_argument("--rate", type=float, default=5.0, help="events per second (default 5)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the last action")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run under `python -m plgapp.devservices run --instance bench --`")
    say = lambda text: print(text, flush=True)  # noqa: E731
    main_url = os.environ["DATABASE_URL"]
    owner_main = os.environ.get("DATABASE_OWNER_URL") or main_url  # creates and migrates the scratch database
    scratch = f"{unquote(urlsplit(main_url).path.lstrip('/')) or 'plg'}_latency"
    url, owner_url = database_url_named(main_url, scratch), database_url_named(owner_main, scratch)
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_OWNER_URL": owner_url,
           "INGEST_RATE_LIMIT_PER_MINUTE": "100000000", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
           "STATIC_MANIFEST": "false", "DEBUG": "false", "CELERY_TASK_ALWAYS_EAGER": "false",
           "SECURE_COOKIES": "false"}  # fmt: skip
    say(f"scratch database {scratch}: recreating and migrating")
    recreate_database(owner_main, scratch)
    manage(env, "migrate", "--noinput")
    created = json.loads(manage(env, "createtenant", "Latency", "latency", "--admin-email", "lat@example.com",
                                "--json"))  # fmt: skip
    key = str(created["write_key"])

    os.environ.update(DATABASE_URL=url, DATABASE_OWNER_URL=owner_url, DJANGO_SETTINGS_MODULE="plgapp.settings",
                      CELERY_TASK_ALWAYS_EAGER="false")  # fmt: skip
    import django

    django.setup()
    from playbooks.models import ActionRun, Enrollment
    from playbooks.services import playbook_create, playbook_transition
    from plgapp import rls
    from plgapp.models import Tenant
    from signals.calls import AccountRef, AddUsers, MemberChange, Track, UpsertAccount, UserRef, parse_properties
    from signals.processing import dirty_entities_process
    from signals.services import calls_ingest

    with rls.all_tenants():
        tenant = Tenant.objects.get(slug="latency")
    rls.tenant_enter(tenant.pk)  # this process works for that tenant only (row-level security)
    began = time.perf_counter()
    now = datetime.now(UTC)
    calls: list[Any] = []
    for n in range(args.accounts):
        account = AccountRef(external_id=f"a{n}")
        calls.append(
            UpsertAccount(
                account=account,
                at=now - timedelta(days=2),
                properties=parse_properties({"stage": "Trial", "name": f"Account {n}"}, "p"),
            )
        )
        calls.append(AddUsers(account=account, at=now - timedelta(days=2),
                              users=(MemberChange(user=UserRef(external_id=f"u{n}"),
                                                  properties=parse_properties({"role": "Owner"}, "p")),)))  # fmt: skip
    for start in range(0, len(calls), 1000):
        calls_ingest(tenant=tenant, calls=list(enumerate(calls[start : start + 1000])), now=now)
    dirty_entities_process(tenant_id=tenant.pk)
    # The event name exists before the playbook is saved (the catalogue checks it): one old report.
    calls_ingest(tenant=tenant, now=now, calls=[(0, Track(
        name="report_created", at=now - timedelta(days=3), user=UserRef(external_id="u0"),
        account=AccountRef(external_id="a0")))])  # fmt: skip
    dirty_entities_process(tenant_id=tenant.pk)
    playbook = playbook_create(tenant=tenant, name="Latency", definition=PLAYBOOK, created_by=None, now=now)
    playbook_transition(tenant=tenant, playbook_id=playbook.pk, action="activate", now=now)
    say(f"tenant: {args.accounts:,} trial accounts, playbook active ({time.perf_counter() - began:.1f} s)")

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-latency-", suffix=".log", delete=False)  # noqa: SIM115
    server = worker = None
    try:
        server = start_gunicorn(env, port, 2, log)
        worker = start_worker(env, log)
        wait_ready(port, server)
        time.sleep(3)  # the worker connects to the broker
        sent: dict[int, float] = {}  # account number -> wall time the POST left
        accounts = range(1, min(args.events, args.accounts - 1) + 1)
        say(f"sending {len(accounts)} qualifying events at {args.rate:g}/s (log: {log.name})")
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        for n in accounts:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            body = {"type": "track", "name": "report_created",
                    "identification": {"user": {"userId": f"u{n}"}, "account": {"accountId": f"a{n}"}},
                    "triggeredAt": datetime.now(UTC).isoformat()}  # fmt: skip
            sent[n] = time.time()
            status = post(port, key, [body])
            if status != 200:
                raise SystemExit(f"the event for a{n} was refused: HTTP {status}")
        deadline = time.monotonic() + args.wait
        from accounts.models import Account

        ids = dict(Account.objects.for_tenant(tenant).filter(external_id__in=[f"a{n}" for n in accounts])
                   .values_list("pk", "external_id"))  # fmt: skip
        while time.monotonic() < deadline:
            done = ActionRun.objects.for_tenant(tenant).filter(status="succeeded").count()
            if done >= len(accounts):
                break
            time.sleep(0.5)
        runs = {
            entity: (created, completed)
            for entity, created, completed in ActionRun.objects.for_tenant(tenant).values_list(
                "enrollment__entity_id", "created_at", "completed_at"
            )
        }
        entered = Enrollment.objects.for_tenant(tenant).count()
    finally:
        stop_process(worker)
        stop_process(server)
    queued, executed = [], []
    for pk, external_id in ids.items():
        n = int(str(external_id)[1:])
        if pk in runs:
            created, completed = runs[pk]
            queued.append(created.timestamp() - sent[n])
            if completed is not None:
                executed.append(completed.timestamp() - sent[n])
    figures: dict[str, float] = {
        "events": len(accounts),
        "entered": entered,
        "queued": len(queued),
        "executed": len(executed),
    }
    for label, values in (("queued", queued), ("executed", executed)):
        if values:
            figures[f"{label}_p50"] = round(percentile(values, 50), 3)
            figures[f"{label}_p95"] = round(percentile(values, 95), 3)
            figures[f"{label}_max"] = round(max(values), 3)
            p50, p95, worst = figures[f"{label}_p50"], figures[f"{label}_p95"], figures[f"{label}_max"]
            say(
                f"  event -> action {label:<9} p50 {p50:.2f} s   p95 {p95:.2f} s   max {worst:.2f} s"
                f"   ({len(values)}/{len(accounts)})"
            )
    if len(executed) < len(accounts):
        say(f"  only {len(executed)} of {len(accounts)} actions ran within {args.wait:.0f} s")
    if args.json:
        print(json.dumps(figures))
    return 0 if len(executed) == len(accounts) else 1


if __name__ == "__main__":
    sys.exit(main())
