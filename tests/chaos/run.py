"""The chaos run: the whole stack under a steady seeded load, faults one after another, then the oracle.

    python -m tests.chaos [--short] [--seed 8] [--rate 250] [--instance chaos] [--json]

Faults, in order: SIGKILL of a prefork pool child every ~10 s; SIGKILL of the worker's main process every ~10 s
(restarted by the harness each time); Redis stopped for 20 s keeping its data, then for 20 s losing it;
PostgreSQL restarted with `pg_ctl restart -m immediate`; the fake Slack answering 50% 429 (Retry-After) and 20%
5xx or hangs past the client timeout. `--short` runs each briefly (the pytest version, tests/test_chaos.py).
Then the load stops, the pipeline drains, and every figure is checked against its target and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos.load import Attempt, Plan, Sender, account_name
from tests.chaos.stack import ROOT, Services, Stack

TENANT = "chaos"
BATCH_EVENTS = 25
CHANNEL = "sales"


@dataclass(frozen=True)
class Profile:
    warmup: float
    child_kills: int
    main_kills: int
    kill_every: float
    redis_down: float
    storm: float
    settle: float  # seconds of load between faults
    drain: float
    accounts: int
    sweep_seconds: int
    lease_seconds: int
    burst: int  # new accounts signing up at once when a fault starts (and, in the storm, oldest trials converting)
    storm_faults: int  # the storm lasts until at least this many posts met a fault (at most 4 x `storm` seconds)
    hang_fraction: float  # of the storm's 20% failures, the share that hang past the client's timeout
    load_seconds: int  # about how long the load runs (the steady sign-ups are spread over it)


LONG = Profile(warmup=20, child_kills=6, main_kills=6, kill_every=10, redis_down=20, storm=40, settle=10, drain=240,
               accounts=40, sweep_seconds=60, lease_seconds=30, burst=8, load_seconds=300,
               storm_faults=20, hang_fraction=0.05)  # fmt: skip
SHORT = Profile(warmup=6, child_kills=2, main_kills=2, kill_every=4, redis_down=6, storm=10, settle=3, drain=75,
                accounts=10, sweep_seconds=10, lease_seconds=10, burst=5, load_seconds=60,
                storm_faults=4, hang_fraction=0.0)  # fmt: skip


@dataclass
class Figure:
    name: str
    value: Any
    target: str
    ok: bool


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: Any, target: str, ok: bool) -> None:
        self.figures.append(Figure(name, value, target, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.figures)

    def table(self) -> str:
        width = max(len(f.name) for f in self.figures)
        vwidth = max(len(str(f.value)) for f in self.figures)
        lines = [f"{'figure':<{width}}  {'value':>{vwidth}}  {'target':<14} ok", "-" * (width + vwidth + 22)]
        lines += [f"{f.name:<{width}}  {f.value!s:>{vwidth}}  {f.target:<14} {'yes' if f.ok else 'NO'}"
                  for f in self.figures]  # fmt: skip
        return "\n".join(lines)


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- database helpers (the harness connects as the owner: it sees every row, row-level security aside) -----------


def db(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def db_try(sql: str, params: Any = None) -> list[tuple[Any, ...]] | None:
    """A query that may meet the outage we caused: None instead of an error, and a fresh connection next time."""
    from django.db import DatabaseError, connection

    try:
        return db(sql, params)
    except DatabaseError:
        connection.close()
        return None


def recreate_database(owner_url: str) -> None:
    import psycopg2
    from dj_database_url import parse

    config = parse(owner_url)
    admin = psycopg2.connect(host=config["HOST"], user=config["USER"], dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute('DROP DATABASE IF EXISTS "plg" WITH (FORCE)')
        cursor.execute('CREATE DATABASE "plg"')
    admin.close()


# --- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Window:
    name: str
    start: float
    end: float = 0.0
    back: float = 0.0  # when the service was back
    resumed_after: float | None = None
    worker_pid_before: int = 0
    worker_pid_after: int = 0
    lost_events: int | None = None


class Chaos:
    def __init__(self, profile: Profile, *, seed: int, rate: float, instance: str) -> None:
        self.profile, self.seed, self.rate = profile, seed, rate
        self.rng = random.Random(seed)
        from plgapp.devservices import Instance

        self.services = Services(Instance(instance))
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"chaos-{instance}-"))
        self.report = Report()
        self.windows: dict[str, Window] = {}
        self.kills = Counter[str]()
        self.unplanned_worker_exits = 0

    # --- set-up

    def setup(self) -> None:
        from tests.fakes.hubspot import FakeHubSpot
        from tests.fakes.slack import FakeSlack

        say(f"starting PostgreSQL and Redis (instance {self.services.instance.name}); logs in {self.log_dir}")
        self.services.start()
        recreate_database(self.services.owner_url)
        self.slack = FakeSlack(seed=self.seed).__enter__()
        self.hubspot = FakeHubSpot(seed=self.seed).__enter__()
        env = {
            **os.environ,
            "DATABASE_URL": self.services.database_url, "DATABASE_OWNER_URL": self.services.owner_url,
            "REDIS_URL": self.services.redis_url, "SLACK_API_URL": self.slack.url + "/api/",
            "HUBSPOT_API_URL": self.hubspot.url, "INTEGRATION_TIMEOUT_SECONDS": "3",
            "PLAYBOOK_BACKOFF_BASE_SECONDS": "1", "PLAYBOOK_CONFIRM_DELAY_SECONDS": "8",
            "PLAYBOOK_LEASE_SECONDS": str(self.profile.lease_seconds),
            "PLG_SWEEP_SECONDS": str(self.profile.sweep_seconds), "INGEST_RATE_LIMIT_PER_MINUTE": "1000000",
            "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "CELERY_TASK_ALWAYS_EAGER": "false",
            "SECURE_COOKIES": "false", "DEBUG": "false", "STATIC_MANIFEST": "false", "PYTHONUNBUFFERED": "1",
            "WORKER_CONCURRENCY": "2", "DB_CONNECT_TIMEOUT": "3",
        }  # fmt: skip
        env.setdefault("SECRET_KEY", "chaos-" + "x" * 50)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env = env
        self.manage("migrate", "--noinput", "--verbosity", "0")
        created = json.loads(
            self.manage("createtenant", "Chaos", TENANT, "--admin-email", "chaos@example.com", "--json")
        )
        self.write_key = str(created["write_key"])
        # The harness itself works as the owner (checks see every tenant's rows).
        os.environ.update({k: v for k, v in env.items() if k != "DATABASE_URL"}, DATABASE_URL=self.services.owner_url,
                          DJANGO_SETTINGS_MODULE="plgapp.settings")  # fmt: skip
        import django

        django.setup()
        from plgapp.models import Tenant

        self.tenant = Tenant.objects.get(slug=TENANT)
        self._connect_fakes()
        self.port = _free_port()
        self.stack = Stack(env, self.port, self.log_dir)
        self.stack.start()
        _wait_http(f"http://127.0.0.1:{self.port}/readyz", 90)
        say(f"stack up: gunicorn :{self.port}, worker pid {self.stack.worker.pid} (prefork, 2 children), beat")

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=self.env, cwd=ROOT,
                                check=True, capture_output=True, text=True)  # fmt: skip
        return result.stdout

    def _connect_fakes(self) -> None:
        from django.utils import timezone

        from integrations.services import connection_create

        team = self.slack.add_workspace("Chaos").team_id
        self.channel = self.slack.add_channel(team, CHANNEL).id
        portal = self.hubspot.add_portal().portal_id
        self.portal = portal
        for n in range(3):
            self.hubspot.add_owner(portal, f"rep{n}@vendor.test")
        self.list_id = str(self.hubspot.add_list(portal, "PQLs").list_id)
        now = timezone.now()
        connection_create(tenant=self.tenant, provider="slack", name="Slack", mode="live", settings={}, now=now,
                          credentials={"bot_token": self.slack.issue_bot_token(team)})  # fmt: skip
        connection_create(tenant=self.tenant, provider="hubspot", name="CRM", mode="live", settings={}, now=now,
                          credentials={"access_token": self.hubspot.issue_token(portal)})  # fmt: skip

    def activate_playbook(self) -> None:
        from django.utils import timezone

        from playbooks.management.commands.demo_data import trial_pqa
        from playbooks.services import playbook_create, playbook_transition

        definition = trial_pqa(f"#{CHANNEL}", self.list_id)
        playbook = playbook_create(tenant=self.tenant, name="Trial PQA", definition=definition, created_by=None,
                                   now=timezone.now())  # fmt: skip
        playbook_transition(tenant=self.tenant, playbook_id=playbook.pk, action="activate", now=timezone.now())
        self.playbook_id = playbook.pk

    # --- the timeline

    def supervise(self, seconds: float) -> None:
        """Let the load run; a worker that died without being told to is counted and started again."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.stack.worker.running():
                self.unplanned_worker_exits += 1
                say("the worker exited by itself; starting it again (counted)")
                self.stack.worker.start()
            for process in (self.stack.web, self.stack.beat):
                if not process.running():
                    say(f"{process.name} exited by itself; starting it again")
                    process.start()
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))

    def lost_so_far(self) -> int | None:
        """Events answered 2xx so far that are not in the database (checked between faults)."""
        with self.sender._lock:
            accepted = set(self.sender.accepted)
        rows = db_try("SELECT message_id FROM signals_event WHERE tenant_id = %s AND message_id = ANY(%s)",
                      [self.tenant.pk, list(accepted)])  # fmt: skip
        return None if rows is None else len(accepted - {row[0] for row in rows})

    def window(self, name: str) -> Window:
        self.plan.burst(self.profile.burst)
        window = Window(name, time.time(), worker_pid_before=self.stack.worker.pid)
        self.windows[name] = window
        return window

    def close(self, window: Window) -> None:
        window.end = time.time()
        window.worker_pid_after = self.stack.worker.pid
        window.lost_events = self.lost_so_far()

    def measure_resume(self, window: Window, limit: float = 60) -> None:
        """Seconds from the service's return to the first processing after it (scores written after `back`)."""
        since = datetime.fromtimestamp(window.back, UTC)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            rows = db_try("SELECT max(computed_at) FROM scoring_score WHERE tenant_id = %s", [self.tenant.pk])
            if rows and rows[0][0] is not None and rows[0][0] > since:
                window.resumed_after = round(rows[0][0].timestamp() - window.back, 1)
                return
            self.supervise(0.5)

    def run(self) -> Report:
        p = self.profile
        batches_per_account = p.load_seconds * self.rate / BATCH_EVENTS / p.accounts
        plan = Plan(seed=self.seed, accounts=p.accounts, batch_events=BATCH_EVENTS,
                    new_account_every=max(2, int(batches_per_account)))  # fmt: skip
        self.plan = plan
        self.sender = Sender(self.port, self.write_key, plan, self.rate)
        self.sender.start()
        # The playbook's templates name account properties: the catalogue must know them before it is saved.
        owner_known = "SELECT 1 FROM accounts_propertydefinition WHERE tenant_id = %s AND key = 'owner_email'"
        _wait(lambda: bool(db_try(owner_known, [self.tenant.pk])), 60, "first account in the catalogue")
        self.activate_playbook()
        say(f"load running at {self.rate:g} events/s; Trial PQA active; warming up {p.warmup:g} s")
        self.supervise(p.warmup)
        started = time.time()

        window = self.window("pool child SIGKILL")
        for _ in range(p.child_kills):
            self.supervise(self.rng.uniform(0.6, 1.4) * p.kill_every)
            victim = self.stack.kill_pool_child(self.rng.choice)
            if victim:
                self.kills["child"] += 1
        self.supervise(p.settle)
        self.close(window)
        say(f"killed {self.kills['child']} pool children")

        window = self.window("worker main SIGKILL")
        for _ in range(p.main_kills):
            self.supervise(self.rng.uniform(0.6, 1.4) * p.kill_every)
            _pid, stragglers = self.stack.kill_worker_main()
            self.kills["main"] += 1
            self.kills["orphans killed"] += stragglers
        self.supervise(p.settle)
        self.close(window)
        say(f"killed the worker's main process {self.kills['main']} times (restarted each time)")

        for name, keep in (("Redis down (data kept)", True), ("Redis down (data lost)", False)):
            window = self.window(name)
            self.services.redis_stop(keep_data=keep)
            self.supervise(p.redis_down)
            self.services.redis_start(keep_data=keep)
            window.back = time.time()
            self.measure_resume(window)
            self.supervise(p.settle)
            self.close(window)
            say(f"{name}: resumed {window.resumed_after} s after Redis returned")

        window = self.window("PostgreSQL restart -m immediate")
        self.services.postgres_restart_immediate()
        window.back = time.time()
        self.measure_resume(window)
        self.supervise(p.settle)
        self.close(window)
        say(f"PostgreSQL restarted: resumed {window.resumed_after} s after it was back")

        window = self.window("Slack storm")
        # Goals reached during the storm: their "New customer" messages meet its faults, whoever enrolls meanwhile.
        self.plan.convert_oldest(p.burst)
        self.slack.set_faults(rate_limit_fraction=0.5, retry_after=2, server_error_fraction=0.2 - p.hang_fraction,
                              hang_fraction=p.hang_fraction, hang_seconds=5, path="/api/chat.postMessage")  # fmt: skip
        self.supervise(p.storm)
        storm_until = time.monotonic() + 3 * p.storm
        while (
            time.monotonic() < storm_until
            and sum(1 for q in self.slack.requests(path="/api/chat.postMessage") if q.fault) < p.storm_faults
        ):
            self.supervise(1)
        self.slack.clear_faults()
        self.close(window)
        say("Slack storm over")
        self.load_seconds = time.time() - started

        self.sender.stop(finish_within=60)
        say(f"load stopped: {len(self.sender.accepted):,} events accepted; draining (up to {p.drain:g} s)")
        self.drained_after = self.drain(p.drain)
        self.check()
        return self.report

    def drain(self, limit: float) -> float | None:
        began = time.monotonic()
        while time.monotonic() - began < limit:
            rows = db_try(
                "SELECT (SELECT count(*) FROM accounts_dirtyentity WHERE tenant_id = %(t)s),"
                " (SELECT count(*) FROM playbooks_actionrun WHERE tenant_id = %(t)s"
                "   AND status IN ('pending', 'failed', 'sending', 'waiting'))",
                {"t": self.tenant.pk},
            )
            if rows and rows[0] == (0, 0):
                # One more sweep period for entries the last processing made possible, then settle again.
                return round(time.monotonic() - began, 1)
            self.supervise(1)
        return None

    # --- the oracle

    def check(self) -> None:
        r, s, p = self.report, self.sender, self.profile
        t = self.tenant.pk
        stored = Counter(row[0] for row in db("SELECT message_id FROM signals_event WHERE tenant_id = %s", [t]))
        r.add("events sent (distinct messageId)", len(s.sent), "-", True)
        r.add("events accepted (2xx)", len(s.accepted), "> 0", len(s.accepted) > 0)
        r.add("accepted events lost", len(s.accepted - set(stored)), "0", not (s.accepted - set(stored)))
        r.add("duplicate events stored", sum(n - 1 for n in stored.values() if n > 1), "0",
              all(n == 1 for n in stored.values()))  # fmt: skip
        unknown = set(stored) - s.sent
        r.add("stored events never sent", len(unknown), "0", not unknown)
        r.add("batches abandoned by the client", len(s.abandoned), "0", not s.abandoned)
        r.add("calls rejected (4xx)", s.rejected_calls, "0", s.rejected_calls == 0)
        for window in self.windows.values():
            r.add(f"  lost after: {window.name}", window.lost_events, "0", window.lost_events == 0)

        # Rollups: equal to an independent GROUP BY of the raw events (all three levels).
        mismatched = db(ROLLUP_ORACLE, {"t": t})[0][0]
        rollups = db("SELECT count(*) FROM signals_dailyrollup WHERE tenant_id = %s", [t])[0][0]
        r.add("daily rollup rows", rollups, "> 0", rollups > 0)
        r.add("rollup rows != GROUP BY of raw events", mismatched, "0", mismatched == 0)
        # Their derived copies (ADR 0022), decoded here in SQL on their own: equal to the rows.
        series = db(SERIES_ORACLE, {"t": t})[0][0]
        r.add("account series rows != their account-level rollups", series, "0", series == 0)
        pairs = db(PAIR_ACTIVITY_ORACLE, {"t": t})[0][0]
        r.add("pairs' latest days != their pair rollups", pairs, "0", pairs == 0)
        marks = db("SELECT count(*) FROM accounts_dirtyentity WHERE tenant_id = %s", [t])[0][0]
        r.add("dirty marks left after drain", marks, "0", marks == 0)

        # Scores: every account and user with accepted events is scored after its last event was stored.
        stale = db(STALE_SCORES, {"t": t})[0][0]
        r.add("entities whose score predates their last event", stale, "0", stale == 0)

        self.check_actions()
        self.check_api()
        r.add(
            "pool children SIGKILLed", self.kills["child"], f">= {p.child_kills}", self.kills["child"] >= p.child_kills
        )
        r.add("worker main SIGKILLed + restarted", self.kills["main"], f"= {p.main_kills}",
              self.kills["main"] == p.main_kills)  # fmt: skip
        r.add("worker exits not caused by us", self.unplanned_worker_exits, "0", self.unplanned_worker_exits == 0)
        r.add("drain after the load (s)", self.drained_after, f"<= {p.drain:g}", self.drained_after is not None)

    def check_actions(self) -> None:
        r, t = self.report, self.tenant.pk
        names = dict(db("SELECT id, name FROM accounts_account WHERE tenant_id = %s", [t]))
        enrolled = db('SELECT entity_id, status, "group" FROM playbooks_enrollment WHERE tenant_id = %s', [t])
        treatment = [(entity, status) for entity, status, group in enrolled if group == "treatment"]
        expected = Counter(f"promising:{names[entity]}" for entity, _status in treatment)
        expected.update(f"customer:{names[entity]}" for entity, status in treatment if status == "goal_reached")
        posted = Counter[str]()
        for message in self.slack.messages(self.channel):
            text = str(message.text or "")
            if text.startswith("Promising trial: "):
                posted[f"promising:{text.removeprefix('Promising trial: ').split(' converts')[0]}"] += 1
            elif text.startswith("New customer: "):
                posted[f"customer:{text.removeprefix('New customer: ')}"] += 1
        duplicates = sum(n - 1 for n in posted.values() if n > 1)
        missing = sum((expected - posted).values())
        unexpected = sum((posted - expected).values()) - duplicates
        r.add("enrollments (treatment)", len(treatment), "> 0", len(treatment) > 0)
        r.add("Slack messages posted", sum(posted.values()), f"= {sum(expected.values())}",
              sum(posted.values()) == sum(expected.values()))  # fmt: skip
        r.add("duplicate Slack messages", duplicates, "0", duplicates == 0)
        r.add("missing Slack messages", missing, "0", missing == 0)
        r.add("Slack messages without enrollment", max(unexpected, 0), "0", unexpected <= 0)
        qualifying = db(QUALIFYING_NOT_ENROLLED, {"t": t, "p": self.playbook_id})[0][0]
        r.add("qualifying accounts not enrolled", qualifying, "0", qualifying == 0)
        runs = Counter(
            dict(db("SELECT status, count(*) FROM playbooks_actionrun WHERE tenant_id = %s GROUP BY 1", [t]))
        )
        r.add("action runs succeeded", runs["succeeded"], "> 0", runs["succeeded"] > 0)
        dead = db("SELECT action_type, error FROM playbooks_actionrun WHERE tenant_id = %s AND status = 'dead'", [t])
        r.add("action runs dead", len(dead), "0", not dead)
        for action_type, error in dead[:5]:
            self.report.notes.append(f"dead run {action_type}: {error[:160]}")
        unfinished = sum(runs[s] for s in ("pending", "failed", "sending", "waiting"))
        r.add("action runs unfinished", unfinished, "0", unfinished == 0)
        slack_ok = db("SELECT count(*) FROM playbooks_actionrun WHERE tenant_id = %s AND status = 'succeeded'"
                      " AND action_type = 'slack.send_message'", [t])[0][0]  # fmt: skip
        r.add("Slack runs succeeded vs messages", f"{slack_ok}/{sum(posted.values())}", "equal",
              slack_ok == sum(posted.values()))  # fmt: skip
        # HubSpot: the list holds exactly the users added and not removed again.
        emails = dict(db("SELECT id, email FROM accounts_enduser WHERE tenant_id = %s", [t]))
        added = {emails[u] for (u,) in db(USERS_OF_RUNS, {"t": t, "type": "hubspot.add_to_list"})}
        removed = {emails[u] for (u,) in db(USERS_OF_RUNS, {"t": t, "type": "hubspot.remove_from_list"})}
        contacts = {obj.id: obj.value("email") for obj in self.hubspot.objects(self.portal, "contacts")}
        members = Counter(str(contacts.get(m)) for m in self.hubspot.list_members(self.portal, self.list_id))
        wrong = len(set(members) ^ (added - removed)) + sum(n - 1 for n in members.values() if n > 1)
        r.add("HubSpot list members", len(members), f"= {len(added - removed)}", wrong == 0)
        storm = [q for q in self.slack.requests(path="/api/chat.postMessage") if q.fault]
        r.add("Slack faults injected (429/5xx/hang)", "/".join(str(sum(1 for q in storm if q.fault == k))
              for k in ("rate_limit", "server_error", "hang")), "> 0", len(storm) > 0)  # fmt: skip
        violations = len(self.slack.retry_after_violations()) + len(self.hubspot.retry_after_violations())
        r.add("requests before their Retry-After", violations, "0", violations == 0)

    def check_api(self) -> None:
        r, attempts = self.report, list(self.sender.attempts)
        errors = [a for a in attempts if a.status >= 500 and a.status != 503]
        r.add("API answers 500 (any time)", len(errors), "0", not errors)
        if errors:  # the run's logs stay on the machine that ran it (CI's are gone): the report names the cause
            logged = (self.log_dir / "web.log").read_text(errors="replace").splitlines()
            self.report.notes += [f"500: …{line[-600:]}" for line in logged if "Internal Server Error" in line][:3]
        pg = self.windows["PostgreSQL restart -m immediate"]
        during = [a for a in attempts if pg.start - 0.5 <= a.started <= pg.back + 2 and not 200 <= a.status < 300]
        unavailable = [a for a in during if a.status == 503]
        with_retry = [a for a in unavailable if a.retry_after]
        r.add("PG down: refused answers", len(during), "-", True)
        r.add("PG down: of those 503 + Retry-After", f"{len(with_retry)}/{len(during)}", "all",
              len(with_retry) == len(during))  # fmt: skip
        for window in self.windows.values():
            if not window.back:
                continue
            r.add(f"{window.name}: resumed after (s)", window.resumed_after, "<= 30",
                  window.resumed_after is not None and window.resumed_after <= 30)  # fmt: skip
            r.add(f"{window.name}: worker restarted", window.worker_pid_before != window.worker_pid_after, "no",
                  window.worker_pid_before == window.worker_pid_after)  # fmt: skip
            if window.name.startswith("Redis"):
                inside = [a for a in attempts if window.start <= a.started < window.back]
                good = sum(1 for a in inside if 200 <= a.status < 300)
                share = 100.0 * good / len(inside) if inside else 0.0
                r.add(f"{window.name}: requests 2xx", f"{share:.1f}% of {len(inside)}", ">= 99%",
                      bool(inside) and share >= 99)  # fmt: skip
                slowest = max((a.finished - a.started for a in inside), default=0.0)
                r.add(f"{window.name}: slowest answer (s)", round(slowest, 2), "<= 5", slowest <= 5)

    def stop(self) -> None:
        for step in (lambda: self.sender.stop(finish_within=0), lambda: self.stack.stop(),
                     lambda: self.slack.__exit__(None, None, None), lambda: self.hubspot.__exit__(None, None, None),
                     self.services.stop):  # fmt: skip
            with contextlib.suppress(Exception):
                step()


ROLLUP_ORACLE = """
WITH e AS (SELECT account_id, end_user_id, name, (occurred_at AT TIME ZONE 'UTC')::date AS day
             FROM signals_event WHERE tenant_id = %(t)s),
expected AS (
  SELECT account_id, 0::bigint AS end_user_id, name, day, count(*)::int AS count FROM e
   WHERE account_id IS NOT NULL GROUP BY 1, 2, 3, 4
  UNION ALL
  SELECT 0::bigint, end_user_id, name, day, count(*)::int FROM e WHERE end_user_id IS NOT NULL GROUP BY 1, 2, 3, 4
  UNION ALL
  SELECT account_id, end_user_id, name, day, count(*)::int FROM e
   WHERE account_id IS NOT NULL AND end_user_id IS NOT NULL GROUP BY 1, 2, 3, 4),
actual AS (SELECT account_id, end_user_id, name, day, count FROM signals_dailyrollup WHERE tenant_id = %(t)s)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM actual) AS a)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT ALL SELECT * FROM expected) AS b)
"""

# Each series record is (EventName id int8, day ordinal int4, count int4), big-endian; `since` = latest day - 200.
SERIES_ORACLE = """
WITH decoded AS (
  SELECT s.account_id, s.since, n.name,
         DATE '0001-01-01' + (('x' || encode(substring(s.packed FROM 16 * i + 9 FOR 4), 'hex'))::bit(32)::int - 1)
           AS day,
         ('x' || encode(substring(s.packed FROM 16 * i + 13 FOR 4), 'hex'))::bit(32)::int AS count
    FROM signals_accountseries AS s
   CROSS JOIN LATERAL generate_series(0, length(s.packed) / 16 - 1) AS i
    JOIN signals_eventname AS n ON n.tenant_id = s.tenant_id
     AND n.id = ('x' || encode(substring(s.packed FROM 16 * i + 1 FOR 8), 'hex'))::bit(64)::bigint
   WHERE s.tenant_id = %(t)s),
rows AS (SELECT account_id, name, day, count, max(day) OVER (PARTITION BY account_id) - 200 AS since
           FROM signals_dailyrollup WHERE tenant_id = %(t)s AND end_user_id = 0 AND account_id <> 0),
expected AS (SELECT account_id, since, name, day, count FROM rows WHERE day >= since),
actual AS (SELECT account_id, since, name, day, count FROM decoded)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM actual) AS a)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT ALL SELECT * FROM expected) AS b)
     + (SELECT count(*) FROM signals_accountseries AS s WHERE s.tenant_id = %(t)s AND NOT EXISTS (
          SELECT 1 FROM rows WHERE rows.account_id = s.account_id))
"""

PAIR_ACTIVITY_ORACLE = """
WITH expected AS (
  SELECT account_id, end_user_id, max(day) AS last_day FROM signals_dailyrollup
   WHERE tenant_id = %(t)s AND account_id <> 0 AND end_user_id <> 0 GROUP BY 1, 2),
actual AS (SELECT account_id, end_user_id, last_day FROM signals_pairactivity WHERE tenant_id = %(t)s)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT ALL SELECT * FROM actual) AS a)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT ALL SELECT * FROM expected) AS b)
"""

STALE_SCORES = """
WITH last AS (
  SELECT 'account' AS entity_type, account_id AS entity_id, max(received_at) AS at FROM signals_event
   WHERE tenant_id = %(t)s AND account_id IS NOT NULL GROUP BY 2
  UNION ALL
  SELECT 'user', end_user_id, max(received_at) FROM signals_event
   WHERE tenant_id = %(t)s AND end_user_id IS NOT NULL GROUP BY 2)
SELECT count(*) FROM last
 WHERE NOT EXISTS (SELECT 1 FROM scoring_score AS s WHERE s.tenant_id = %(t)s AND s.entity_type = last.entity_type
                      AND s.entity_id = last.entity_id AND s.computed_at >= last.at)
"""

QUALIFYING_NOT_ENROLLED = """
SELECT count(*) FROM accounts_account AS a
  JOIN scoring_score AS s ON s.tenant_id = a.tenant_id AND s.entity_type = 'account' AND s.entity_id = a.id
                         AND s.kind = 'conversion'
 WHERE a.tenant_id = %(t)s AND a.stage = 'Trial' AND s.value > 0.75
   AND NOT EXISTS (SELECT 1 FROM playbooks_enrollment AS e WHERE e.tenant_id = %(t)s AND e.playbook_id = %(p)s
                      AND e.entity_id = a.id)
"""

USERS_OF_RUNS = """
SELECT DISTINCT end_user_id FROM playbooks_actionrun
 WHERE tenant_id = %(t)s AND action_type = %(type)s AND status = 'succeeded' AND end_user_id IS NOT NULL
"""


def _free_port() -> int:
    from plgapp.devservices import free_port

    return free_port()


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise SystemExit(f"chaos: no {what} within {seconds:g} s")


def _wait_http(url: str, seconds: float) -> None:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait(ready, seconds, f"200 from {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="each fault briefly (about 2 minutes in all)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--rate", type=float, default=250.0, help="events per second (default 250)")
    parser.add_argument("--instance", default="chaos", help="services under .local/<instance> (default chaos)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    profile = SHORT if args.short else LONG
    chaos = Chaos(profile, seed=args.seed, rate=args.rate, instance=args.instance)
    began = time.monotonic()
    try:
        chaos.setup()
        report = chaos.run()
    finally:
        chaos.stop()
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    print(f"{'all figures on target' if report.ok else 'SOME FIGURES OFF TARGET'} "
          f"({time.monotonic() - began:.0f} s; logs in {chaos.log_dir})")  # fmt: skip
    if args.json:
        print(json.dumps({"ok": report.ok, "figures": [f.__dict__ for f in report.figures], "notes": report.notes},
                         default=str))  # fmt: skip
    return 0 if report.ok else 1


__all__ = ["Attempt", "account_name", "main"]
