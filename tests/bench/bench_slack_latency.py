"""Event -> Slack benchmark (issue 8): from a qualifying event's POST to the message arriving at a (fake) Slack,
under 1,000 events/s of background ingestion. Target: p95 <= 1 s.

Run inside the embedded services (`make bench BENCH=slack`):

    python -m plgapp.devservices run --instance benchslack -- python tests/bench/bench_slack_latency.py

A scratch database `<name>_slack` gets one tenant with QUALIFYING + BACKGROUND trial accounts (one user each, an
account property `team` from 0 to CHANNELS-1) and CHANNELS active account playbooks, one per team: entry = Trial,
`team` is k and `report_created` at least once today; action = `slack.send_message` to `#sales-k` through a live
Slack connection pointed at the fake Slack (`tests/fakes/slack.py`, in this process; `SLACK_API_URL`). The
channels spread the messages so that Slack's own limit (one message a second per channel, which the app
enforces) does not queue them: this measures the pipeline, not the limit.

gunicorn (2 workers) serves the ingestion API and one Celery worker (prefork, 2 processes, every queue) runs the
pipeline as in production: ingestion marks the account dirty -> the processor recomputes rollups, scores and
the affected playbooks -> the evaluation enrolls it and queues the action run -> the executor posts to Slack.
A separate process posts background batches (`/api/journy/batch`, BATCH `page_viewed` events of users in the
background accounts, never qualifying) at BACKGROUND_RATE events/s for the whole measurement. After a warm-up,
the benchmark POSTs one `report_created` event per qualifying account at RATE per second and takes, for each,
the fake Slack's receipt time of its message minus the time the POST was sent; prints p50/p95/p99/max, the
split at the action run's creation (event -> queued -> Slack), and the background rate achieved.

Not a pytest test (pytest collects test_*.py only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
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
    analyze,
    database_url_named,
    free_port,
    manage,
    percentile,
    recreate_database,
    start_gunicorn,
    stop_process,
    wait_ready,
)
from tests.bench.bench_playbook_latency import post  # noqa: E402


def playbook(team: int) -> dict[str, Any]:
    return {
        "object": "account",
        "entry": {
            "all": [
                {"field": "account.stage", "op": "eq", "value": "Trial"},
                {"field": "account.properties.team", "op": "eq", "value": str(team)},
                {"event": "report_created", "of": "account", "within_days": 1, "op": "gte", "value": 1},
            ]
        },
        "actions": [
            {
                "id": "notify",
                "type": "slack.send_message",
                "params": {
                    "channel": f"#sales-{team}",
                    "color": "good",
                    "text": "PQA {{ account.external_id }}: {{ account.name }} created a report",
                },
            }
        ],
        "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
        "timeout": {"days": 14},
    }


def start_worker(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """One Celery worker as the Procfile runs it (prefork, 2 processes, every queue)."""
    command = [sys.executable, "-m", "celery", "-A", "plgapp", "worker", "--queues",
               "ingest,scoring,playbooks,actions,default", "--concurrency", "2", "--without-gossip",
               "--without-mingle", "--loglevel", os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING")]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)


# ---------------------------------------------------------------------------------------------------
# Background load (its own process): batches of non-qualifying events at a steady rate


def _background_thread(
    port: int, key: str, bodies: list[bytes], due: list[float], stop: threading.Event, out: dict[str, int]
) -> None:
    headers = {"Content-Type": "application/json", "x-api-key": key}
    for n, at in enumerate(due):
        if stop.is_set():
            return
        wait = at - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", BATCH_PATH, body=bodies[n % len(bodies)], headers=headers)
            response = conn.getresponse()
            payload = response.read()
            if response.status == 200:
                out["events"] += int(orjson.loads(payload)["data"]["accepted"])
            else:
                out["errors"] += 1
        except (OSError, http.client.HTTPException):
            out["errors"] += 1
        finally:
            conn.close()
        out["late"] += int(time.monotonic() - at > 1.0)


def background_main(
    pipe: multiprocessing.connection.Connection,
    port: int,
    key: str,
    accounts: int,
    rate: float,
    batch: int,
    threads: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(8)
    bodies = []
    for _ in range(200):
        calls = []
        for _ in range(batch):
            n = rng.randrange(accounts)
            calls.append(
                {
                    "type": "track",
                    "name": "page_viewed",
                    "identification": {"user": {"userId": f"bu{n}"}, "account": {"accountId": f"b{n}"}},
                    "metadata": {
                        "path": f"/app/reports/{rng.randrange(10_000)}",
                        "ms": rng.randrange(5, 900),
                        "source": rng.choice(("web", "api", "ios")),
                    },
                }
            )
        bodies.append(orjson.dumps({"calls": calls}))
    pipe.send("ready")
    seconds = float(pipe.recv())
    interval = batch / rate  # one batch every interval, spread over the threads
    began = time.monotonic() + 0.1
    total = int(seconds / interval)
    stop = threading.Event()
    outs = [{"events": 0, "errors": 0, "late": 0} for _ in range(threads)]
    workers = [
        threading.Thread(
            target=_background_thread,
            daemon=True,
            args=(
                port,
                key,
                bodies[i::threads],
                [began + k * interval for k in range(i, total, threads)],
                stop,
                outs[i],
            ),
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    if pipe.poll(seconds + 30):
        pipe.recv()  # asked to stop early
    stop.set()
    for worker in workers:
        worker.join(60)
    elapsed = time.monotonic() - began
    pipe.send({key: sum(o[key] for o in outs) for key in ("events", "errors", "late")} | {"seconds": elapsed})


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=90, help="qualifying events (default 90)")
    parser.add_argument("--rate", type=float, default=1.5, help="qualifying events per second (default 1.5)")
    parser.add_argument("--channels", type=int, default=10, help="teams = playbooks = Slack channels (default 10)")
    parser.add_argument("--background", type=int, default=5000, help="background accounts (default 5000)")
    parser.add_argument("--background-rate", type=float, default=1000, help="events/s of background (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="background events per request (default 100)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of background before measuring")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the last message")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--timeline", action="store_true", help="also print each event's send time and latencies")
    args = parser.parse_args(argv)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(
                f"{name} is not set: run under `python -m plgapp.devservices run --instance benchslack --`"
            )
    say = lambda text: print(text, flush=True)  # noqa: E731
    main_url = os.environ["DATABASE_URL"]
    owner_main = os.environ.get("DATABASE_OWNER_URL") or main_url
    scratch = f"{unquote(urlsplit(main_url).path.lstrip('/')) or 'plg'}_slack"
    url, owner_url = database_url_named(main_url, scratch), database_url_named(owner_main, scratch)

    from tests.fakes.slack import FakeSlack

    fake = FakeSlack()
    fake.start()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATABASE_OWNER_URL": owner_url,
        "INGEST_RATE_LIMIT_PER_MINUTE": "100000000",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "STATIC_MANIFEST": "false",
        "DEBUG": "false",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "SECURE_COOKIES": "false",
        "SLACK_API_URL": fake.url + "/api/",
    }
    say(f"scratch database {scratch}: recreating and migrating")
    recreate_database(owner_main, scratch)
    manage(env, "migrate", "--noinput")
    created = json.loads(manage(env, "createtenant", "Slack", "slack", "--admin-email", "slack@example.com", "--json"))
    key = str(created["write_key"])

    os.environ.update(
        DATABASE_URL=url,
        DATABASE_OWNER_URL=owner_url,
        DJANGO_SETTINGS_MODULE="plgapp.settings",
        CELERY_TASK_ALWAYS_EAGER="false",
        SLACK_API_URL=fake.url + "/api/",
    )
    import django

    django.setup()
    from django.db import connection

    from accounts.models import Account
    from integrations.services import connection_create
    from playbooks.models import ActionRun
    from playbooks.services import playbook_create, playbook_transition
    from plgapp import rls
    from plgapp.models import Tenant
    from signals.calls import AccountRef, AddUsers, MemberChange, Track, UpsertAccount, UserRef, parse_properties
    from signals.processing import dirty_entities_process
    from signals.services import calls_ingest

    with rls.all_tenants():
        tenant = Tenant.objects.get(slug="slack")
    rls.tenant_enter(tenant.pk)
    began = time.perf_counter()
    now = datetime.now(UTC)
    calls: list[Any] = []
    pools = [("q", "u", n) for n in range(args.events)] + [("b", "bu", n) for n in range(args.background)]
    for account_prefix, user_prefix, n in pools:
        account = AccountRef(external_id=f"{account_prefix}{n}")
        properties = {"stage": "Trial", "name": f"Account {account_prefix}{n}", "team": str(n % args.channels)}
        calls.append(
            UpsertAccount(account=account, at=now - timedelta(days=2), properties=parse_properties(properties, "p"))
        )
        calls.append(
            AddUsers(
                account=account,
                at=now - timedelta(days=2),
                users=(
                    MemberChange(
                        user=UserRef(external_id=f"{user_prefix}{n}"),
                        properties=parse_properties({"role": "Owner"}, "p"),
                    ),
                ),
            )
        )
    for start in range(0, len(calls), 1000):
        calls_ingest(tenant=tenant, calls=list(enumerate(calls[start : start + 1000])), now=now)
    # The event names exist before the playbooks are saved (the catalogue checks them): one old event each.
    calls_ingest(
        tenant=tenant,
        now=now,
        calls=[
            (
                i,
                Track(
                    name=name,
                    at=now - timedelta(days=3),
                    user=UserRef(external_id="bu0"),
                    account=AccountRef(external_id="b0"),
                ),
            )
            for i, name in enumerate(("report_created", "page_viewed"))
        ],
    )
    dirty_entities_process(tenant_id=tenant.pk)

    team = fake.add_workspace("Bench").team_id
    for k in range(args.channels):
        fake.add_channel(team, f"sales-{k}")
    connection_create(
        tenant=tenant,
        provider="slack",
        name="Slack",
        mode="live",
        settings={},
        now=now,
        credentials={"bot_token": fake.issue_bot_token(team)},
    )
    for k in range(args.channels):
        created_playbook = playbook_create(
            tenant=tenant, name=f"PQA team {k}", definition=playbook(k), created_by=None, now=now
        )
        playbook_transition(tenant=tenant, playbook_id=created_playbook.pk, action="activate", now=now)
    say(
        f"tenant: {len(pools):,} trial accounts ({args.events} qualifying, {args.background:,} background), "
        f"{args.channels} playbooks -> #sales-0..{args.channels - 1} on the fake Slack "
        f"({time.perf_counter() - began:.1f} s)"
    )
    connection.close()

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-slack-", suffix=".log", delete=False)  # noqa: SIM115
    server = worker = None
    loader: multiprocessing.process.BaseProcess | None = None
    pipe: multiprocessing.connection.Connection | None = None
    sent: dict[str, float] = {}
    background: dict[str, float] = {}
    load_samples: list[float] = []
    try:
        server = start_gunicorn(env, port, 2, log)
        worker = start_worker(env, log)
        wait_ready(port, server)
        context = multiprocessing.get_context("spawn")
        pipe, child = context.Pipe()
        loader = context.Process(
            target=background_main,
            name="bench-background",
            daemon=True,
            args=(child, port, key, args.background, args.background_rate, args.batch, 4),
        )
        loader.start()
        if not pipe.poll(60):
            raise SystemExit("the background process did not start")
        pipe.recv()
        measure_seconds = args.warmup + args.events / args.rate + args.wait
        pipe.send(measure_seconds)
        say(
            f"background: {args.background_rate:,.0f} events/s in batches of {args.batch} (page_viewed, "
            f"{args.background:,} accounts); {args.warmup:.0f} s warm-up (log: {log.name})"
        )
        time.sleep(args.warmup)
        # The steady state of a running server: its autovacuum would have analyzed the tables the warm-up filled.
        analyze(owner_url)
        fake.clear_requests()
        say(f"sending {args.events} qualifying events at {args.rate:g}/s")
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        measure_began = time.time()
        for n in range(args.events):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            body = {
                "type": "track",
                "name": "report_created",
                "identification": {"user": {"userId": f"u{n}"}, "account": {"accountId": f"q{n}"}},
                "triggeredAt": datetime.now(UTC).isoformat(),
            }
            sent[f"q{n}"] = time.time()
            status = post(port, key, [body])
            if status != 200:
                raise SystemExit(f"the event for q{n} was refused: HTTP {status}")
            if n % 10 == 0:
                load_samples.append(os.getloadavg()[0])
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            if len(fake.requests(path="/api/chat.postMessage")) >= args.events:
                break
            time.sleep(0.2)
        measure_ended = time.time()
        pipe.send("stop")
        if pipe.poll(90):
            background = pipe.recv()
    finally:
        if loader is not None and loader.is_alive():
            loader.terminate()
            loader.join(10)
        stop_process(worker)
        stop_process(server)
        log.close()

    received: dict[str, float] = {}
    for request in fake.requests(path="/api/chat.postMessage"):
        text = str((request.body or {}).get("text", "")) if isinstance(request.body, dict) else ""
        if not text:
            from tests.fakes.slack import slack_arguments

            text = str(slack_arguments(request).get("text", ""))
        if request.status == 200 and text.startswith("PQA "):
            received.setdefault(text.split()[1].rstrip(":"), request.received_at)
    fake.stop()
    to_slack = sorted(received[a] - sent[a] for a in sent if a in received)
    with rls.tenant(tenant.pk):
        ids = dict(
            Account.objects.for_tenant(tenant).filter(external_id__in=list(sent)).values_list("pk", "external_id")
        )
        runs = {
            ids[entity]: (created_at.timestamp(), completed.timestamp() if completed else None)
            for entity, created_at, completed in ActionRun.objects.for_tenant(tenant)
            .filter(enrollment__entity_id__in=list(ids))
            .values_list("enrollment__entity_id", "created_at", "completed_at")
        }
    queued = sorted(runs[a][0] - sent[a] for a in sent if a in runs)
    after_queued = sorted(received[a] - runs[a][0] for a in sent if a in runs and a in received)
    say("")
    say(f"event -> Slack message, {args.events} qualifying events at {args.rate:g}/s over {args.channels} channels")
    say(f"{'':28}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'max s':>8}{'n':>6}")
    for label, values in (
        ("event -> message at Slack", to_slack),
        ("  event -> action queued", queued),
        ("  queued -> message at Slack", after_queued),
    ):
        if values:
            say(
                f"{label:<28}{percentile(values, 50):8.2f}{percentile(values, 95):8.2f}{percentile(values, 99):8.2f}"
                f"{max(values):8.2f}{len(values):6}"
            )
    if args.timeline:
        say(f"{'account':>8}{'sent +s':>9}{'queued s':>10}{'Slack s':>9}")
        for external_id, at in sorted(sent.items(), key=lambda item: item[1]):
            queued_s = f"{runs[external_id][0] - at:10.2f}" if external_id in runs else f"{'-':>10}"
            slack_s = f"{received[external_id] - at:9.2f}" if external_id in received else f"{'-':>9}"
            say(f"{external_id:>8}{at - measure_began:9.2f}{queued_s}{slack_s}")
    rate = background.get("events", 0) / background["seconds"] if background.get("seconds") else 0.0
    say(
        f"background: {background.get('events', 0):,} events in {background.get('seconds', 0):.1f} s = "
        f"{rate:,.0f} events/s (target {args.background_rate:,.0f}), errors {background.get('errors', 0)}, "
        f"batches > 1 s late {background.get('late', 0)}; measured window {measure_ended - measure_began:.0f} s; "
        f"load average up to {max(load_samples, default=0):.1f}"
    )
    missing = [a for a in sent if a not in received]
    if missing:
        say(f"  {len(missing)} of {len(sent)} messages did not arrive within {args.wait:.0f} s: {missing[:10]}")
    p95 = percentile(to_slack, 95) if to_slack else float("inf")
    verdict = "met" if p95 <= 1 and not missing else "NOT met"
    say(f"TARGET (p95 <= 1 s under {args.background_rate:,.0f} events/s): {verdict}")
    if args.json:
        figures = {
            "events": len(sent),
            "received": len(to_slack),
            "background_events_per_s": round(rate),
            **{f"slack_p{q}": round(percentile(to_slack, q), 3) for q in (50, 95, 99) if to_slack},
            **{f"queued_p{q}": round(percentile(queued, q), 3) for q in (50, 95, 99) if queued},
        }
        say(json.dumps(figures))
    if args.keep_db:
        say(f"kept: database {scratch}, server and worker log {log.name}")
    else:
        Path(log.name).unlink(missing_ok=True)
    if not args.keep_db:
        recreate_database(owner_main, scratch, drop_only=True)
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
