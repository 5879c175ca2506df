"""Playbook benchmark (issue 5), part 1: the entry-condition sweep over a 100k-account tenant (SQL backend).

Run inside the embedded services, after the scoring benchmark built its tenant (it reuses that scratch
database, with its scores):

    python -m plgapp.devservices run --instance bench -- python tests/bench/bench_playbook_sweep.py

It creates and activates an account playbook whose entry reads a stage, a score and an event count —
`account.stage = Trial`, `account.score.conversion >= MIN_SCORE`, `report_created` at least 3 times in the
last 7 days — with one `log` action, then times: the count of matches in SQL (`preview`), the first
sweep (enrolls every match and queues its action run), and a second sweep with nothing new to enroll. The
playbook and its enrollments are deleted at the end, so runs repeat.

Not a pytest test (pytest collects test_*.py only).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_scoring import TENANT_SLUG, _database_exists, _scratch_urls  # noqa: E402

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # the scoring benchmark's end of history


def definition(min_score: float) -> dict[str, Any]:
    return {
        "object": "account",
        "entry": {"all": [
            {"field": "account.stage", "op": "eq", "value": "Trial"},
            {"field": "account.score.conversion", "op": "gte", "value": min_score},
            {"event": "report_created", "of": "account", "within_days": 7, "op": "gte", "value": 3},
        ]},
        "actions": [{"id": "note", "type": "log", "params": {"message": "qualified trial"}}],
        "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
        "timeout": {"days": 21},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=100_000, help="the scoring benchmark's tenant size")
    parser.add_argument("--min-score", type=float, default=0.2)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the first sweep here")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    main_url = os.environ.get("DATABASE_URL")
    if not main_url:
        raise SystemExit("DATABASE_URL is not set: run under `python -m plgapp.devservices run --instance bench --`")
    owner_main = os.environ.get("DATABASE_OWNER_URL") or main_url
    scratch, url = _scratch_urls(main_url, args.accounts)
    if not _database_exists(owner_main, scratch):
        raise SystemExit(f"no {scratch}: run the scoring benchmark first (make bench BENCH=scoring)")
    os.environ["DATABASE_URL"] = url
    os.environ["DATABASE_OWNER_URL"] = _scratch_urls(owner_main, args.accounts)[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plgapp.settings")
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "false"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from accounts.models import Account
    from playbooks.evaluation import preview
    from playbooks.models import ActionRun, Enrollment, Playbook
    from playbooks.services import playbook_create, playbook_transition, sweep
    from plgapp import rls
    from plgapp.models import Tenant

    call_command("migrate", "--noinput", verbosity=0)
    say = lambda text: print(text, flush=True)  # noqa: E731
    tenant = Tenant.objects.get(slug=TENANT_SLUG)
    rls.tenant_enter(tenant.pk)  # as the sweep task runs: inside the tenant, under row-level security
    figures: dict[str, Any] = {"accounts": Account.objects.for_tenant(tenant).count()}

    def drop_bench_playbooks() -> None:  # enrollments first: they protect the versions they ran on
        Enrollment.objects.for_tenant(tenant).filter(playbook__name="bench sweep").delete()
        Playbook.objects.for_tenant(tenant).filter(name="bench sweep").update(current_version=None)
        Playbook.objects.for_tenant(tenant).filter(name="bench sweep").delete()

    drop_bench_playbooks()
    raw = definition(args.min_score)
    playbook = playbook_create(tenant=tenant, name="bench sweep", definition=raw, created_by=None, now=NOW)
    playbook_transition(tenant=tenant, playbook_id=playbook.pk, action="activate", now=NOW)
    say(f"SWEEP over {figures['accounts']:,} accounts: entry = Trial, conversion >= {args.min_score}, "
        "report_created >= 3 in 7 days")  # fmt: skip

    began = time.perf_counter()
    counted = preview(tenant=tenant, obj="account", condition=raw["entry"], now=NOW, sample=5)
    figures["preview_seconds"] = round(time.perf_counter() - began, 2)
    figures["matches"] = counted["count"]
    say(f"  preview (count + sample in SQL)   {figures['preview_seconds']:>7.2f} s   {counted['count']:,} match")

    def timed_sweep(label: str, key: str) -> None:
        profiler = cProfile.Profile() if args.profile and key == "first_sweep" else None
        began = time.perf_counter()
        if profiler:
            profiler.enable()
        with transaction.atomic():  # as one sweep task commits; on_commit hands the runs to the executor
            result = sweep(tenant=tenant, now=NOW)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        seconds = time.perf_counter() - began
        figures[key] = {"seconds": round(seconds, 2), **result}
        rate = f"{result['entered'] / seconds:,.0f} enrollments/s" if result["entered"] else ""
        say(f"  {label:<33}{seconds:>7.2f} s   entered {result['entered']:,}  {rate}")

    timed_sweep("first sweep (enroll + queue)", "first_sweep")
    figures["enrollments"] = Enrollment.objects.for_tenant(tenant).filter(playbook=playbook).count()
    figures["runs"] = ActionRun.objects.for_tenant(tenant).filter(enrollment__playbook=playbook).count()
    say(f"  enrollments {figures['enrollments']:,}, action runs queued {figures['runs']:,}")
    timed_sweep("second sweep (nothing new)", "second_sweep")

    drop_bench_playbooks()
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
