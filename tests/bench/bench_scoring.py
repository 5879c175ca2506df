"""Scoring benchmark (issue 4): a big generated tenant, trained and fully rescored, with a per-phase breakdown.

Run inside the embedded services (`make bench`, or on its own):

    python -m plgapp.devservices run --instance bench -- python tests/bench/bench_scoring.py [--accounts 10000]

What it does, in one run:

1. builds a scratch database next to DATABASE_URL's (`<name>_scoring`), migrated, with one tenant of ACCOUNTS
   accounts and ~USERS_PER_ACCOUNT users per account, loaded in bulk by COPY through the tenant door
   (`Model.objects.copy`): accounts, users, memberships with a role, the property and stage history and the
   daily rollups of DAYS days of a product-led business (see `World`). The generator of the product
   (scoring/generator.py) feeds everything through the ingestion services, which is right for tests and demos
   and far too slow for 100,000 accounts; this loader plans the same kind of world with numpy and writes the
   tables scoring reads. A scratch database that already holds the same world (same size, seed, days) is
   kept and reused, unless --fresh; its scores, score history and models are cleared before measuring;
2. scores every entity with the rule-based scores (no model yet): health, conversion, churn, champion;
3. trains conversion, churn and health (`scoring.services.model_train`; a version that beats its rule
   baseline becomes active and rescores its kind, which is timed apart from the training);
4. rescores everything with the trained models (`scores_refresh_all`), kind by kind, and prints entities/s
   and where the time goes (load_history, features, predict, reasons, write);
5. rescores a handful of changed entities (`rescore_changed`), as the processor of dirty marks does.

Not a pytest test (pytest collects test_*.py only). --profile FILE writes a cProfile of step 4 (with
--target-only: of one extra run, not counted). cProfile sees the main thread only, not the loading threads.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import psycopg2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_ingest import database_url_named, recreate_database  # noqa: E402

TENANT_SLUG = "bench-scoring"
COPY_CHUNK = 200_000  # rows per COPY statement
DAY = 86_400

# --- the world (numbers from scoring/generator.py, so both describe the same kind of business) ------------

SIZES = ("small", "mid", "large")
SIZE_MIX = (0.6, 0.3, 0.1)
EMPLOYEES = ((1, 50), (51, 500), (501, 10_000))
TEAM = ((1, 3), (3, 15), (5, 40))  # planned team per size, scaled so users ≈ USERS_PER_ACCOUNT x accounts
INDUSTRIES = ("software", "fintech", "retail", "healthcare", "education", "media", "manufacturing")
INDUSTRY_MIX = (0.25, 0.12, 0.15, 0.12, 0.12, 0.12, 0.12)
INDUSTRY_EFFECT = (0.6, 0.3, -0.3, 0.0, -0.5, -0.2, -0.4)
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "CA", "AU", "SE", "ES", "IN", "BR")
COUNTRY_MIX = (0.35, 0.12, 0.1, 0.08, 0.06, 0.07, 0.05, 0.04, 0.04, 0.05, 0.04)
CONVERSION_BASE, SIZE_EFFECT, FIT_WEIGHT = -1.6, (-0.3, 0.3, 0.5), 1.4
CHURN_BASE, CHURN_SIZE_EFFECT, CHURN_FIT_WEIGHT, CHURN_NOISE = -0.4, (0.4, 0.0, -0.4), 0.8, 0.7
TRIAL_DAYS = 30
CONVERSION_AFTER_DAYS = (5.0, 30.0)
TRIAL_CLOSED_SHARE, TRIAL_CLOSED_AFTER_DAYS = 0.4, (0.0, 10.0)
CUSTOMER_LIFETIME_DAYS = (14.0, 60.0)
CHURN_DECAY_DAYS = 28
TRIAL_LEVEL, DORMANT_LEVEL, CUSTOMER_LEVEL = (0.3, 1.5), 0.05, (1.1, -0.3)
WEEKEND_FACTOR = 0.25
OFFICE_HOURS = (8.0, 18.0)
EVENTS_PER_USER_DAY = 4.0
# Not every working day is a product day: a user opens it on SESSION_SHARE of the days the generator would
# (with as many events in all), so about a fifth of the month's users are active on a weekday (DAU/MAU ~0.2).
SESSION_SHARE = 0.35
ADMIN_SHARE = 0.2
SECOND_ACCOUNT_SHARE, SECOND_ACCOUNT_WEIGHT = 0.1, 0.5
CHAMPION_SHARE, OWNER_CHAMPION_SHARE, CHAMPION_BOOST = 0.12, 0.6, 3.0
ACTIVITY_SIGMA = 0.6
QUIET_START, QUIET_END = 0.05, 0.12
TRIAL_JOINERS = (0.15, 1.1)
INTEGRATION_TRIES = 3
PLANS = {"trial": (10, 5), "team": (10, 50), "business": (50, 500), "enterprise": (500, 5_000)}
PLAN_BY_SIZE = ("team", "business", "enterprise")
STORAGE_SIZE_FACTOR = (1.0, 3.0, 10.0)
STORAGE_START_GB, STORAGE_WEEKLY_GB, STORAGE_GB_PER_EVENT = 0.05, 0.03, 0.004
# Event names: a session opens with a login, then the work (weights by phase); two sparse ones.
NAMES = ("login", "dashboard_viewed", "report_created", "export_downloaded", "alert_created",
         "teammate_invited", "integration_connected")  # fmt: skip
LOGIN, INVITED, INTEGRATION = 0, 5, 6
WORK = (1, 2, 3, 4)  # indices into NAMES
CUSTOMER_WEIGHTS = (4.0, 2.5, 1.5, 1.0)
KEY_EVENTS = ("report_created", "alert_created")
ROLES = ("Owner", "Admin", "Member")
ROLE_ELSEWHERE = (1, 2, 1)  # Owner -> Admin, Admin -> Member, Member -> Admin
TITLES = ("Founder", "Analyst", "Engineer", "Data Lead", "Marketing Manager", "IT Manager", "Product Manager")


@dataclass
class World:
    """The planned tenant as column arrays (times in epoch seconds, days as days since the epoch)."""

    end: int
    start: int
    # accounts
    size: np.ndarray
    industry: np.ndarray
    employees: np.ndarray
    country: np.ndarray
    propensity: np.ndarray
    churn_propensity: np.ndarray
    trial_start: np.ndarray
    converts_at: np.ndarray  # -1: never (or after end)
    churns_at: np.ndarray  # -1: never (or after end)
    # users and memberships
    user_activity: np.ndarray
    user_title: np.ndarray
    member_account: np.ndarray
    member_user: np.ndarray
    member_role: np.ndarray
    member_joined: np.ndarray
    member_weight: np.ndarray
    # rollups, pair level (account index, user index, name, day, count); the other levels are sums
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] = field(repr=False)
    # property history: (entity index, key, time, value as JSON text) per entity type
    storage_ticks: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)  # account, time, used gb

    @property
    def accounts(self) -> int:
        return len(self.size)

    @property
    def users(self) -> int:
        return len(self.user_activity)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _level(w: World | dict[str, np.ndarray], at: np.ndarray | int, accounts: np.ndarray | slice) -> np.ndarray:
    """Activity level of accounts at instant(s) `at` (as in generator._Account.level)."""
    get = (lambda name: getattr(w, name)[accounts]) if isinstance(w, World) else (lambda name: w[name][accounts])
    start, converts, churns = get("trial_start"), get("converts_at"), get("churns_at")
    p, q = get("propensity"), get("churn_propensity")
    at = np.broadcast_to(np.asarray(at, dtype=np.int64), start.shape)
    level = np.where(at - start >= TRIAL_DAYS * DAY, DORMANT_LEVEL, TRIAL_LEVEL[0] + TRIAL_LEVEL[1] * p)
    customer = (converts >= 0) & (at >= converts)
    days_left = np.where(churns >= 0, (churns - at) / DAY, 1e9)
    decay = np.where(days_left < CHURN_DECAY_DAYS, np.maximum(0.05, days_left / CHURN_DECAY_DAYS) ** 1.5, 1.0)
    level = np.where(customer, (CUSTOMER_LEVEL[0] + CUSTOMER_LEVEL[1] * q) * decay, level)
    gone = (at < start) | ((churns >= 0) & (at >= churns))
    return np.where(gone, 0.0, level)


def plan_world(*, accounts: int, users_per_account: float, days: int, seed: int, end: datetime) -> World:
    rng = np.random.default_rng(seed)
    end_s = int(end.timestamp())
    start_s = end_s - days * DAY
    n = accounts
    size = rng.choice(3, size=n, p=SIZE_MIX)
    industry = rng.choice(len(INDUSTRIES), size=n, p=INDUSTRY_MIX)
    low = np.array([e[0] for e in EMPLOYEES])[size]
    high = np.array([e[1] for e in EMPLOYEES])[size]
    employees = np.round(np.exp(rng.uniform(np.log(low), np.log(high)))).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=n, p=np.array(COUNTRY_MIX) / sum(COUNTRY_MIX))
    fit = rng.normal(size=n)
    p = _logistic(
        CONVERSION_BASE + np.array(SIZE_EFFECT)[size] + np.array(INDUSTRY_EFFECT)[industry] + FIT_WEIGHT * fit
    )
    q = _logistic(
        CHURN_BASE + np.array(CHURN_SIZE_EFFECT)[size] - CHURN_FIT_WEIGHT * fit + rng.normal(0, CHURN_NOISE, n)
    )
    day0 = start_s - start_s % DAY
    trial_day = day0 + np.floor(rng.uniform(0, (end_s - start_s - 3600) / DAY, n)).astype(np.int64) * DAY
    trial_start = trial_day + (rng.uniform(*OFFICE_HOURS, n) * 3600).astype(np.int64)
    trial_start = np.clip(trial_start, start_s, end_s - 3600)
    will_convert = rng.random(n) < p
    converts = np.where(will_convert, trial_start + (rng.uniform(*CONVERSION_AFTER_DAYS, n) * DAY).astype(np.int64), -1)
    churn_customer = will_convert & (rng.random(n) < q)
    closed = ~will_convert & (rng.random(n) < TRIAL_CLOSED_SHARE)
    churns = np.where(churn_customer, converts + (rng.uniform(*CUSTOMER_LIFETIME_DAYS, n) * DAY).astype(np.int64), -1)
    churns = np.where(
        closed, trial_start + ((TRIAL_DAYS + rng.uniform(*TRIAL_CLOSED_AFTER_DAYS, n)) * DAY).astype(np.int64), churns
    )
    converts = np.where(converts <= end_s, converts, -1)
    churns = np.where(churns <= end_s, churns, -1)
    level_of = {"trial_start": trial_start, "converts_at": converts, "churns_at": churns, "propensity": p,
                "churn_propensity": q}  # fmt: skip
    # Teams: an owner at the start, teammates invited during the trial (more the likelier it converts) or after
    # converting. The team sizes are scaled so that the users that actually joined by `end` hit the target.
    team_low = np.array([t[0] for t in TEAM])[size]
    team_high = np.array([t[1] for t in TEAM])[size]
    team_draw = rng.uniform(0, 1, n)

    def teams(scale: float) -> np.ndarray:
        return np.maximum(1, np.round((team_low + team_draw * (team_high - team_low + 1) - 0.5) * scale)).astype(int)

    def members_for(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        team = teams(scale)
        account = np.repeat(np.arange(n), team)
        k = np.arange(len(account)) - np.repeat(np.cumsum(team) - team, team)  # 0 = owner
        local = np.random.default_rng(seed + 1)
        in_trial = np.minimum(team - 1, np.round((team - 1) * (TRIAL_JOINERS[0] + TRIAL_JOINERS[1] * p)))[account]
        joined = np.where(
            k == 0,
            trial_start[account] + 30,
            np.where(
                k <= in_trial,
                trial_start[account] + (local.uniform(1.0, 21.0, len(account)) * DAY).astype(np.int64),
                np.where(converts[account] >= 0,
                         converts[account] + (local.uniform(1.0, 60.0, len(account)) * DAY).astype(np.int64), -1),
            ),
        )  # fmt: skip
        ok = (joined >= 0) & (joined <= end_s)
        ok &= (k == 0) | (_level(level_of, np.where(joined >= 0, joined, 0), account) > 0)
        return account[ok], k[ok], joined[ok]

    target = users_per_account * n  # consultants come on top, as second memberships
    scale = 1.0
    for _round in range(3):
        scale *= target / max(1, len(members_for(scale)[0]))
    member_account, k, member_joined = members_for(scale)
    users = len(member_account)
    member_user = np.arange(users)
    is_owner = k == 0
    member_role = np.where(is_owner, 0, np.where(rng.random(users) < ADMIN_SHARE, 1, 2))
    champion = rng.random(users) < np.where(is_owner, OWNER_CHAMPION_SHARE, CHAMPION_SHARE)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, users) * np.where(champion, CHAMPION_BOOST, 1.0)
    title = rng.integers(0, len(TITLES), users)
    weight = np.ones(users)
    # Consultants: also in another account, with another role, half as busy there.
    consultant = np.flatnonzero(rng.random(users) < SECOND_ACCOUNT_SHARE)
    other = (
        (member_account[consultant] + rng.integers(1, n, len(consultant))) % n if n > 1 else member_account[consultant]
    )
    joined2 = np.maximum(member_joined[consultant], trial_start[other]) + (
        rng.uniform(1.0, 14.0, len(consultant)) * DAY
    ).astype(np.int64)
    ok = (joined2 <= end_s) & (_level(level_of, joined2, other) > 0) & (other != member_account[consultant])
    consultant, other, joined2 = consultant[ok], other[ok], joined2[ok]
    member_account = np.concatenate([member_account, other])
    member_user = np.concatenate([member_user, consultant])
    member_role = np.concatenate([member_role, np.array(ROLE_ELSEWHERE)[member_role[consultant]]])
    member_joined = np.concatenate([member_joined, joined2])
    weight = np.concatenate([weight, np.full(len(consultant), SECOND_ACCOUNT_WEIGHT)])
    world = World(
        end=end_s, start=start_s, size=size, industry=industry, employees=employees, country=country, propensity=p,
        churn_propensity=q, trial_start=trial_start, converts_at=converts, churns_at=churns, user_activity=activity,
        user_title=title, member_account=member_account, member_user=member_user, member_role=member_role,
        member_joined=member_joined, member_weight=weight,
        pairs=(np.zeros(0, np.int64),) * 5, storage_ticks=(np.zeros(0, np.int64),) * 3,
    )  # fmt: skip
    owner_of = np.full(n, -1)
    owner_of[member_account[:users][is_owner]] = member_user[:users][is_owner]
    _simulate(world, rng, owner_of)
    return world


def _split(rng: np.random.Generator, total: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multinomial split of `total` (rows) by per-row `weights` (rows x parts), by a chain of binomials."""
    out = np.zeros(weights.shape, dtype=np.int64)
    left = total.astype(np.int64)
    mass = weights.sum(axis=1)
    for j in range(weights.shape[1] - 1):
        share = np.divide(weights[:, j], mass, out=np.zeros(len(mass)), where=mass > 0)
        out[:, j] = rng.binomial(left, np.clip(share, 0.0, 1.0))
        left = left - out[:, j]
        mass = mass - weights[:, j]
    out[:, -1] = left
    return out


def _simulate(w: World, rng: np.random.Generator, owner_of: np.ndarray) -> None:
    """Daily counts per membership and event name, as the generator's sessions would produce them."""
    quiet = np.zeros(w.users, dtype=bool)
    first_day = w.start // DAY
    last_day = (w.end - 1) // DAY
    trial_weights = np.column_stack([np.full(w.accounts, 4.0), 1.0 + 3.0 * w.propensity, np.ones(w.accounts),
                                     0.4 + 1.5 * w.propensity])  # fmt: skip
    customer_weights = np.array(CUSTOMER_WEIGHTS)
    parts: list[tuple[np.ndarray, ...]] = []
    tick_account, tick_time, tick_used = [], [], []
    used = np.round(STORAGE_START_GB * np.array(STORAGE_SIZE_FACTOR)[w.size], 2)
    next_tick = w.trial_start + 7 * DAY
    since_tick = np.zeros(w.accounts)
    for day in range(first_day, last_day + 1):
        midnight = day * DAY
        noon = midnight + DAY // 2
        draw = rng.random(w.users)
        quiet = np.where(quiet, draw >= QUIET_END, draw < QUIET_START)
        level = _level(w, noon, slice(None))
        weekend = ((day + 3) % 7) >= 5  # 1970-01-01 was a Thursday
        visible = min(1.0, (w.end - midnight) / DAY)
        member_level = level[w.member_account]
        lam = EVENTS_PER_USER_DAY * w.user_activity[w.member_user] * member_level * w.member_weight
        lam *= (WEEKEND_FACTOR if weekend else 1.0) * visible / SESSION_SHARE
        session = rng.random(len(lam)) < SESSION_SHARE
        active = session & (~quiet[w.member_user]) & (member_level > 0) & (w.member_joined < midnight + DAY)
        rows = np.flatnonzero(active)
        count = rng.poisson(lam[rows])
        busy = count > 0
        rows, count = rows[busy], count[busy]
        accounts = w.member_account[rows]
        customer = (w.converts_at[accounts] >= 0) & (noon >= w.converts_at[accounts])
        weights = np.where(customer[:, None], customer_weights[None, :], trial_weights[accounts])
        split = _split(rng, count - 1, weights)
        counts = np.column_stack([np.ones(len(rows), dtype=np.int64), split])
        for column, name in enumerate((LOGIN, *WORK)):
            keep = counts[:, column] > 0
            parts.append((accounts[keep], w.member_user[rows][keep], np.full(int(keep.sum()), name),
                          np.full(int(keep.sum()), day), counts[keep, column]))  # fmt: skip
        np.add.at(since_tick, accounts, count)
        # weekly storage use, re-sent as a property
        due = np.flatnonzero((next_tick < midnight + DAY) & (next_tick <= w.end) & (level > 0))
        if len(due):
            converted = (w.converts_at[due] >= 0) & (next_tick[due] >= w.converts_at[due])
            limit = np.where(converted, np.array([PLANS[p][1] for p in PLAN_BY_SIZE])[w.size[due]], PLANS["trial"][1])
            factor = np.array(STORAGE_SIZE_FACTOR)[w.size[due]]
            used[due] = np.round(
                np.minimum(used[due] + factor * (STORAGE_WEEKLY_GB + STORAGE_GB_PER_EVENT * since_tick[due]), limit), 2
            )
            since_tick[due] = 0
            tick_account.append(due)
            tick_time.append(next_tick[due].copy())
            tick_used.append(used[due].copy())
            next_tick[due] += 7 * DAY
        stale = (next_tick < midnight + DAY) & (level <= 0)
        next_tick[stale] = np.iinfo(np.int64).max // 2
    # Sparse events: the owner invites each teammate (the day before they join), connects integrations.
    home = np.flatnonzero((w.member_role != 0) & (w.member_weight == 1.0))
    invited_at = np.maximum(w.member_joined[home] - (rng.uniform(1.0, 36.0, len(home)) * 3600).astype(np.int64),
                            w.trial_start[w.member_account[home]] + DAY // 2)  # fmt: skip
    inviter = owner_of[w.member_account[home]]
    ok = (inviter >= 0) & (invited_at >= w.start) & (invited_at < w.end)
    parts.append((w.member_account[home][ok], inviter[ok], np.full(int(ok.sum()), INVITED), invited_at[ok] // DAY,
                  np.ones(int(ok.sum()), dtype=np.int64)))  # fmt: skip
    tries = np.repeat(np.arange(w.accounts), INTEGRATION_TRIES)
    at = w.trial_start[tries] + (rng.uniform(0.2, 20.0, len(tries)) * DAY).astype(np.int64)
    ok = (rng.random(len(tries)) < w.propensity[tries]) & (_level(w, at, tries) > 0) & (at < w.end)
    ok &= owner_of[tries] >= 0
    parts.append((tries[ok], owner_of[tries[ok]], np.full(int(ok.sum()), INTEGRATION), at[ok] // DAY,
                  np.ones(int(ok.sum()), dtype=np.int64)))  # fmt: skip
    columns = [np.concatenate([part[c] for part in parts]).astype(np.int64) for c in range(5)]
    w.pairs = _sum_by(columns[:4], columns[4], (w.accounts, w.users, len(NAMES), last_day + 1))  # type: ignore[assignment]
    w.storage_ticks = (
        np.concatenate(tick_account) if tick_account else np.zeros(0, np.int64),
        np.concatenate(tick_time) if tick_time else np.zeros(0, np.int64),
        np.concatenate(tick_used) if tick_used else np.zeros(0),
    )


def _sum_by(keys: Sequence[np.ndarray], counts: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Group rows by `keys` (each < its size), summing `counts`; returns the unique keys and the sums."""
    code = np.zeros(len(counts), dtype=np.int64)
    for key, size in zip(keys, sizes, strict=True):
        code = code * int(size) + key
    unique, inverse = np.unique(code, return_inverse=True)
    sums = np.bincount(inverse, weights=counts).astype(np.int64)
    out = []
    for size in reversed(sizes):
        out.append(unique % int(size))
        unique = unique // int(size)
    return (*reversed(out), sums)


# --- loading the world into the scratch database -------------------------------------------------------------


def _iso(seconds: np.ndarray) -> list[str]:
    return [f"{text}+00:00" for text in np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")]


def _days(days: np.ndarray) -> list[str]:
    return list(np.datetime_as_string(days.astype("datetime64[D]"), unit="D"))


def _chunks[T](rows: Iterable[T], size: int = COPY_CHUNK) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy(model: Any, tenant: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from django.db import transaction

    for chunk in _chunks(rows):
        with transaction.atomic():
            model.objects.copy(tenant, columns, chunk)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Loaded:
    tenant: Any
    account_ids: np.ndarray
    user_ids: np.ndarray
    member_ids: np.ndarray
    counts: dict[str, int]
    seconds: float


def load_world(w: World, say: Callable[[str], None]) -> Loaded:
    """COPY the world into a new tenant (through the tenant door) and analyze the tables."""
    from accounts.models import Account, EndUser, Membership, PropertyChange, PropertyDefinition, StageChange
    from plgapp.services import tenant_create
    from scoring.services import settings_set
    from signals.models import DailyRollup
    from signals.rollups import account_series_rebuild
    from signals.services import signal_save

    began = time.perf_counter()
    now_iso = datetime.fromtimestamp(w.end, UTC).isoformat()
    tenant = tenant_create(name="Bench scoring", slug=TENANT_SLUG)
    end = datetime.fromtimestamp(w.end, UTC)
    settings_set(tenant=tenant, now=end, raw={
        "key_events": list(KEY_EVENTS),
        "milestones": [
            {"name": "3 or more teammates", "metric": "seats", "count": 3},
            {"name": "Invited 2 teammates in the first 3 days", "event": "teammate_invited", "count": 2,
             "within_hours": 72},
            {"name": "10 or more key events in the first 2 weeks", "metric": "key_events", "count": 10,
             "within_hours": 336},
            {"name": "Connected an integration", "event": "integration_connected", "count": 1},
        ],
    })  # fmt: skip
    signal_save(tenant=tenant, signal=None, now=end, data={
        "key": "reports-7d", "name": "Reports in 7 days", "entity_type": "account", "kind": "event_count",
        "event": "report_created", "window_days": 7, "weights": {"conversion": 0.3},
    })  # fmt: skip
    signal_save(tenant=tenant, signal=None, now=end, data={
        "key": "storage-use", "name": "Storage use", "entity_type": "account", "kind": "ratio",
        "numerator": "storage_used_gb", "denominator": "storage_limit_gb", "weights": {"churn": -0.2},
    })  # fmt: skip

    # Account properties: the trial's, then the plan's at conversion, then the weekly storage use.
    n = w.accounts
    names = [f"Company {k:06d}" for k in range(n)]
    start_iso = _iso(w.trial_start)
    converts_iso = _iso(np.maximum(w.converts_at, 0))
    churns_iso = _iso(np.maximum(w.churns_at, 0))
    tick_account, tick_time, tick_used = w.storage_ticks
    last_used = np.round(STORAGE_START_GB * np.array(STORAGE_SIZE_FACTOR)[w.size], 2)
    last_used_at = w.trial_start.copy()
    order = np.argsort(tick_time, kind="stable")
    last_used[tick_account[order]] = tick_used[order]
    last_used_at[tick_account[order]] = tick_time[order]
    last_used_iso = _iso(last_used_at)
    converted = w.converts_at >= 0
    stage = np.where(w.churns_at >= 0, "Churned", np.where(converted, "Customer", "Trial"))
    stage_at = np.where(w.churns_at >= 0, w.churns_at, np.where(converted, w.converts_at, w.trial_start))
    stage_iso = _iso(stage_at)
    plan_rows = []
    account_rows = []
    for k in range(n):
        plan = PLAN_BY_SIZE[w.size[k]] if converted[k] else "trial"
        seats, storage = PLANS[plan]
        props = {"name": names[k], "industry": INDUSTRIES[w.industry[k]], "employees": int(w.employees[k]),
                 "country": COUNTRIES[w.country[k]], "plan": plan, "seat_limit": seats, "storage_limit_gb": storage,
                 "storage_used_gb": float(last_used[k])}  # fmt: skip
        times = dict.fromkeys(props, start_iso[k])
        if converted[k]:
            times.update(dict.fromkeys(("plan", "seat_limit", "storage_limit_gb"), converts_iso[k]))
        times["storage_used_gb"] = last_used_iso[k]
        times["stage"] = stage_iso[k]
        account_rows.append((f"acct-{k:06d}", f"company-{k:06d}.example", names[k], _json(props), _json(times),
                             stage[k], times["stage"], start_iso[k], now_iso))  # fmt: skip
        plan_rows.append(plan)
    _copy(Account, tenant, ["external_id", "domain", "name", "properties", "property_times", "stage",
                            "stage_changed_at", "created_at", "updated_at"], account_rows)  # fmt: skip
    del account_rows
    account_ids = np.zeros(n, dtype=np.int64)
    for external_id, pk in Account.objects.for_tenant(tenant).values_list("external_id", "pk").iterator(50_000):
        account_ids[int(str(external_id)[5:])] = pk
    say(f"  accounts        {n:>12,}  ({time.perf_counter() - began:.0f} s)")

    # Users: the first membership's join is when they appear; their name and title come with it.
    first_join = np.full(w.users, np.iinfo(np.int64).max)
    np.minimum.at(first_join, w.member_user, w.member_joined)
    pair_account, pair_user, pair_name, pair_day, pair_count = w.pairs
    last_active = np.full(w.users, -1)
    np.maximum.at(last_active, pair_user, pair_day)
    first_iso = _iso(first_join)
    last_iso = _iso(np.where(last_active >= 0, last_active * DAY + 17 * 3600, first_join))
    user_rows = []
    for u in range(w.users):
        props = {"name": f"User {u:07d}", "title": TITLES[w.user_title[u]]}
        user_rows.append((f"user-{u:07d}", f"user{u:07d}@example.com", _json(props),
                          _json(dict.fromkeys(props, first_iso[u])), first_iso[u],
                          last_iso[u] if last_active[u] >= 0 else None, first_iso[u], now_iso))  # fmt: skip
    _copy(EndUser, tenant, ["external_id", "email", "properties", "property_times", "first_seen_at", "last_seen_at",
                            "created_at", "updated_at"], user_rows)  # fmt: skip
    del user_rows
    user_ids = np.zeros(w.users, dtype=np.int64)
    for external_id, pk in EndUser.objects.for_tenant(tenant).values_list("external_id", "pk").iterator(50_000):
        user_ids[int(str(external_id)[5:])] = pk
    say(f"  users           {w.users:>12,}  ({time.perf_counter() - began:.0f} s)")

    joined_iso = _iso(w.member_joined)
    member_rows = (
        (int(account_ids[w.member_account[m]]), int(user_ids[w.member_user[m]]),
         _json({"role": ROLES[w.member_role[m]]}), _json({"role": joined_iso[m]}), joined_iso[m], joined_iso[m])
        for m in range(len(w.member_account))
    )  # fmt: skip
    _copy(Membership, tenant, ["account_id", "end_user_id", "properties", "property_times", "joined_at",
                               "state_changed_at"], member_rows)  # fmt: skip
    member_ids = np.zeros(len(w.member_account), dtype=np.int64)
    position = {(int(a), int(u)): m for m, (a, u) in enumerate(zip(account_ids[w.member_account],
                                                                   user_ids[w.member_user], strict=True))}  # fmt: skip
    for pk, account_id, user_id in (
        Membership.objects.for_tenant(tenant).values_list("pk", "account_id", "end_user_id").iterator(50_000)
    ):
        member_ids[position[(account_id, user_id)]] = pk
    del position
    say(f"  memberships     {len(member_ids):>12,}  ({time.perf_counter() - began:.0f} s)")

    # Property history.
    def property_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(n):
            pk = int(account_ids[k])
            values = {"name": names[k], "industry": INDUSTRIES[w.industry[k]], "employees": int(w.employees[k]),
                      "country": COUNTRIES[w.country[k]], "plan": "trial", "seat_limit": PLANS["trial"][0],
                      "storage_limit_gb": PLANS["trial"][1],
                      "storage_used_gb": round(STORAGE_START_GB * STORAGE_SIZE_FACTOR[w.size[k]], 2)}  # fmt: skip
            for key, value in values.items():
                yield ("account", pk, key, _json(value), start_iso[k])
            if converted[k]:
                seats, storage = PLANS[plan_rows[k]]
                for key, value in (("plan", plan_rows[k]), ("seat_limit", seats), ("storage_limit_gb", storage)):
                    yield ("account", pk, key, _json(value), converts_iso[k])
        tick_iso = _iso(tick_time)
        for j in range(len(tick_account)):
            yield ("account", int(account_ids[tick_account[j]]), "storage_used_gb", _json(float(tick_used[j])),
                   tick_iso[j])  # fmt: skip
        for u in range(w.users):
            pk = int(user_ids[u])
            yield ("user", pk, "name", _json(f"User {u:07d}"), first_iso[u])
            yield ("user", pk, "title", _json(TITLES[w.user_title[u]]), first_iso[u])
        for m in range(len(member_ids)):
            yield ("membership", int(member_ids[m]), "role", _json(ROLES[w.member_role[m]]), joined_iso[m])

    counts: dict[str, int] = {"accounts": n, "users": w.users, "memberships": len(member_ids)}
    rows = list(property_rows())
    counts["property_changes"] = len(rows)
    _copy(PropertyChange, tenant, ["entity_type", "entity_id", "key", "value", "changed_at"], rows)
    del rows
    definitions = [("account", key, kind) for key, kind in (
        ("name", "text"), ("industry", "text"), ("employees", "number"), ("country", "text"), ("plan", "text"),
        ("seat_limit", "number"), ("storage_limit_gb", "number"), ("storage_used_gb", "number"))]  # fmt: skip
    definitions += [("user", "name", "text"), ("user", "title", "text"), ("membership", "role", "text")]
    _copy(PropertyDefinition, tenant, ["entity_type", "key", "type", "first_seen_at"],
          [(*row, datetime.fromtimestamp(w.start, UTC).isoformat()) for row in definitions])  # fmt: skip
    say(f"  property changes{counts['property_changes']:>12,}  ({time.perf_counter() - began:.0f} s)")

    stage_rows: list[tuple[Any, ...]] = []
    for k in range(n):
        pk = int(account_ids[k])
        stage_rows.append(("account", pk, None, "Trial", start_iso[k]))
        previous = "Trial"
        if converted[k]:
            stage_rows.append(("account", pk, previous, "Customer", converts_iso[k]))
            previous = "Customer"
        if w.churns_at[k] >= 0:
            stage_rows.append(("account", pk, previous, "Churned", churns_iso[k]))
    counts["stage_changes"] = len(stage_rows)
    _copy(StageChange, tenant, ["entity_type", "entity_id", "from_stage", "to_stage", "changed_at"], stage_rows)
    del stage_rows
    say(f"  stage changes   {counts['stage_changes']:>12,}  ({time.perf_counter() - began:.0f} s)")

    # Rollups at the three levels: pairs as simulated, users and accounts as their sums.
    user_level = _sum_by([pair_user, pair_name, pair_day], pair_count, (w.users, len(NAMES), int(pair_day.max()) + 1))
    account_level = _sum_by([pair_account, pair_name, pair_day], pair_count,
                            (w.accounts, len(NAMES), int(pair_day.max()) + 1))  # fmt: skip
    day_text = _days(np.arange(int(pair_day.max()) + 1))
    levels = (
        ("pair", account_ids[pair_account], user_ids[pair_user], pair_name, pair_day, pair_count),
        ("user", np.zeros(len(user_level[0]), np.int64), user_ids[user_level[0]], *user_level[1:]),
        ("account", account_ids[account_level[0]], np.zeros(len(account_level[0]), np.int64), *account_level[1:]),
    )
    for level, accounts_col, users_col, name_col, day_col, count_col in levels:
        rows_iter = zip(accounts_col.tolist(), users_col.tolist(), [NAMES[i] for i in name_col.tolist()],
                        [day_text[d] for d in day_col.tolist()], count_col.tolist(), strict=True)  # fmt: skip
        _copy(DailyRollup, tenant, ["account_id", "end_user_id", "name", "day", "count"], rows_iter)
        counts[f"rollups_{level}"] = len(count_col)
        say(f"  rollups {level:<8}{len(count_col):>12,}  ({time.perf_counter() - began:.0f} s)")
    # The catalogue's registry and the accounts' series, which the rollup processor keeps in the product.
    account_series_rebuild(tenant=tenant)
    say(f"  account series    {len(account_ids):>9,}  ({time.perf_counter() - began:.0f} s)")
    _analyze()
    return Loaded(tenant, account_ids, user_ids, member_ids, counts, time.perf_counter() - began)


def _analyze() -> None:
    _vacuum(("accounts_account", "accounts_enduser", "accounts_membership", "accounts_propertychange",
             "accounts_stagechange", "signals_dailyrollup", "signals_accountseries"))  # fmt: skip


def _vacuum(tables: Sequence[str]) -> None:
    """VACUUM ANALYZE (planner statistics, visibility map, no dead rows of an earlier run) as the tables' owner: the
    application's role may not (PostgreSQL skips such a table with a mere warning). Not tenant data access:
    maintenance of whole tables in the bench's own scratch database."""
    owner = psycopg2.connect(os.environ.get("DATABASE_OWNER_URL") or os.environ["DATABASE_URL"])
    owner.autocommit = True
    try:
        with owner.cursor() as cursor:
            for table in tables:
                cursor.execute(f"VACUUM ANALYZE {table}")
    finally:
        owner.close()


# --- measuring ----------------------------------------------------------------------------------------------


def _scratch_urls(main_url: str, accounts: int) -> tuple[str, str]:
    """One scratch database per size, so a quick small run does not drop the big tenant."""
    name = f"{unquote(urlsplit(main_url).path.lstrip('/')) or 'plg'}_scoring_{accounts}"
    return name, database_url_named(main_url, name)


def _database_exists(admin_url: str, name: str) -> bool:
    conn = psycopg2.connect(admin_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cursor.fetchone() is not None
    finally:
        conn.close()


def _fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    return {"accounts": args.accounts, "users_per_account": args.users_per_account, "days": args.days,
            "seed": args.seed, "end": args.end.isoformat(), "version": 1}  # fmt: skip


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f}/s" if seconds > 0 else "         -"


def _print_phases(say: Callable[[str], None], phases: dict[str, float], total: float) -> None:
    """Phases by time; "write: upsert" and the like are parts of "write", shown under it."""
    tops = {name: seconds for name, seconds in phases.items() if ":" not in name}
    for name, seconds in sorted(tops.items(), key=lambda item: -item[1]):
        say(
            f"      {name:<24}{seconds:8.2f} s  {seconds / total:6.1%}"
            if total
            else f"      {name:<24}{seconds:8.2f} s"
        )
        for part, part_seconds in sorted(phases.items(), key=lambda item: -item[1]):
            if part.startswith(f"{name}:"):
                say(f"        {part.removeprefix(name + ':').strip():<22}{part_seconds:8.2f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=100_000, help="accounts (default 100000)")
    parser.add_argument("--users-per-account", type=float, default=5.0, help="users per account (default 5)")
    parser.add_argument("--days", type=int, default=90, help="days of history (default 90)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--fresh", action="store_true", help="rebuild the tenant even if the scratch database has it")
    parser.add_argument("--load-only", action="store_true", help="build the tenant and stop")
    parser.add_argument("--skip-train", action="store_true", help="no training (rule-based rescoring only)")
    parser.add_argument("--changed", type=int, default=10, help="entities changed for the incremental rescore")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the full rescore with models here")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument(
        "--target-only",
        type=int,
        metavar="RUNS",
        default=0,
        help="only the target's figure, RUNS times: conversion + churn of every account on one load, "
        "with trained models (trains them first if none is active; keeps existing scores)",
    )
    args = parser.parse_args(argv)
    args.end = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run under `python -m plgapp.devservices run --instance bench --`")
    say = lambda text: print(text, flush=True)  # noqa: E731
    main_url = os.environ["DATABASE_URL"]
    # The application role (row-level security) cannot create databases: the schema's owner does, and migrates.
    owner_main = os.environ.get("DATABASE_OWNER_URL") or main_url
    scratch, url = _scratch_urls(main_url, args.accounts)
    _, owner_url = _scratch_urls(owner_main, args.accounts)
    fingerprint = _fingerprint(args)
    marker = ROOT / ".local" / "bench" / f"{scratch}.json"
    reuse = (
        not args.fresh
        and _database_exists(owner_main, scratch)
        and marker.exists()
        and (json.loads(marker.read_text()).get("fingerprint") == fingerprint)
    )
    if not reuse:
        marker.unlink(missing_ok=True)
        say(f"scratch database {scratch}: recreating and migrating")
        recreate_database(owner_main, scratch)
    os.environ["DATABASE_URL"] = url
    os.environ["DATABASE_OWNER_URL"] = owner_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plgapp.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DEBUG"] = "false"
    import django

    django.setup()
    from django.core.management import call_command

    from plgapp import rls
    from plgapp.models import Tenant
    from scoring import services
    from scoring.models import ModelStatus, ScoreKind

    figures: dict[str, Any] = {"accounts": args.accounts}
    call_command("migrate", "--noinput", verbosity=0)  # also brings a reused database up to date
    rls.swap(rls.ALL_TENANTS)  # building the tenant is operator work, as a management command's
    if not reuse:
        began = time.perf_counter()
        world = plan_world(accounts=args.accounts, users_per_account=args.users_per_account, days=args.days,
                           seed=args.seed, end=args.end)  # fmt: skip
        plan_seconds = time.perf_counter() - began
        say(f"planned the world in {plan_seconds:.1f} s: {world.accounts:,} accounts, {world.users:,} users, "
            f"{len(world.member_account):,} memberships, {len(world.pairs[0]):,} pair rollups")  # fmt: skip
        say("loading (COPY through the tenant door):")
        loaded = load_world(world, say)
        say(f"LOAD  {loaded.seconds:.1f} s (+ {plan_seconds:.1f} s planning)")
        counts = loaded.counts
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fingerprint, "counts": counts}))
        figures["load_seconds"] = round(loaded.seconds, 1)
        del world
    else:
        counts = json.loads(marker.read_text())["counts"]
        say(f"reusing {scratch}: {counts}")
    figures["counts"] = counts
    if args.load_only:
        return 0
    tenant = Tenant.objects.get(slug=TENANT_SLUG)
    rls.tenant_enter(tenant.pk)  # measured as the scoring tasks run: inside the tenant, under row-level security
    now = args.end
    accounts, users, memberships = counts["accounts"], counts["users"], counts["memberships"]
    size_of = {ScoreKind.HEALTH: users, ScoreKind.CONVERSION: accounts, ScoreKind.CHURN: accounts,
               ScoreKind.CHAMPION: memberships}  # fmt: skip
    unit_of = {ScoreKind.HEALTH: "users", ScoreKind.CONVERSION: "accounts", ScoreKind.CHURN: "accounts",
               ScoreKind.CHAMPION: "memberships"}  # fmt: skip
    order = (ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION)
    account_kinds = (ScoreKind.CONVERSION, ScoreKind.CHURN)

    from scoring.models import ModelVersion, Score, ScoreHistory

    def timed(run: Callable[[], Any], profiler: cProfile.Profile | None = None) -> tuple[Any, float, dict[str, float]]:
        # A full rescore rewrites every score: the dead rows of the run before are vacuumed, as autovacuum does
        # between the product's hourly rescores (back to back, each run would otherwise wade through more of them).
        _vacuum(("scoring_score", "scoring_scorehistory"))
        with services.phase_timings() as phases:
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            result = run()
            if profiler:
                profiler.disable()
            return result, time.perf_counter() - began, dict(phases)

    def account_rescore(at: datetime) -> int:
        """The target's figure: conversion and churn of every account, sharing one load."""
        with services._phase("load_history"):
            history = services.scoring_history(tenant=tenant, kinds=account_kinds, now=at)
        return sum(services.scores_refresh_kinds(tenant=tenant, kinds=account_kinds, now=at, history=history).values())

    def measure_accounts(
        at: datetime, note: str, profiler: cProfile.Profile | None = None
    ) -> tuple[float, dict[str, float]]:
        """Time account_rescore at `at`, print its line and phases; (seconds, phases)."""
        written, seconds, phases = timed(partial(account_rescore, at), profiler)
        say(f"  ACCOUNTS    {seconds:7.2f} s  {accounts:>9,} accounts    {_rate(accounts, seconds)}   {written:>9,} "
            f"scores written (conversion + churn on one load{note})")  # fmt: skip
        _print_phases(say, phases, seconds)
        return seconds, phases

    def full_rescore(label: str, at: datetime, profile: Path | None = None) -> dict[str, Any]:
        """Three ways: each kind on its own (it loads what it needs), the accounts' kinds on one load (the
        target's figure), and the hourly job (scores_refresh_all: one load for every kind)."""
        say(f"\nFULL RESCORE ({label}), every entity of the tenant")
        result: dict[str, Any] = {"kinds": {}}
        profiler = cProfile.Profile() if profile else None
        say("  each kind on its own (scores_refresh loads what the kind reads):")
        for kind in order:
            written, seconds, phases = timed(partial(services.scores_refresh, tenant=tenant, kind=kind, now=at))
            size = size_of[kind]
            say(f"  {kind:<11} {seconds:7.2f} s  {size:>9,} {unit_of[kind]:<11} {_rate(size, seconds)}   "
                f"{written:>9,} scores written")  # fmt: skip
            _print_phases(say, phases, seconds)
            result["kinds"][kind] = {"seconds": round(seconds, 2), "entities": size, "written": written,
                                     "per_s": round(size / seconds) if seconds else None,
                                     "phases": {k: round(v, 2) for k, v in phases.items()}}  # fmt: skip

        seconds, phases = measure_accounts(at, "", profiler)
        result["accounts"] = {"seconds": round(seconds, 2), "per_s": round(accounts / seconds),
                              "phases": {k: round(v, 2) for k, v in phases.items()}}  # fmt: skip
        written_all, seconds, phases = timed(lambda: services.scores_refresh_all(tenant=tenant, now=at))
        say(f"  WHOLE       {seconds:7.2f} s  scores_refresh_all (every kind, one load): {accounts / seconds:,.0f} "
            f"accounts/s, {users / seconds:,.0f} users/s, {memberships / seconds:,.0f} memberships/s")  # fmt: skip
        _print_phases(say, phases, seconds)
        result["whole"] = {"seconds": round(seconds, 2), "written": {str(k): v for k, v in written_all.items()},
                           "phases": {k: round(v, 2) for k, v in phases.items()}}  # fmt: skip
        if profiler and profile:
            profiler.dump_stats(str(profile))
            say(f"  profile of the ACCOUNTS run written to {profile}")
        return result

    if args.target_only:
        for kind in account_kinds:
            if services.active_version(tenant=tenant, kind=kind) is None:
                version = services.model_version_start(tenant=tenant, kind=kind, now=now)
                began = time.perf_counter()
                version = services.model_train(tenant=tenant, version_id=version.pk, now=now)
                say(f"trained {kind} in {time.perf_counter() - began:.1f} s: {version.status}")
        runs = []
        for run in range(args.target_only):
            at = now + timedelta(days=run)  # a new day each run: every score moves and gets a history row
            seconds, _phases = measure_accounts(at, f", {at:%Y-%m-%d}")
            runs.append(round(seconds, 2))
        if args.profile:  # one more run, not among the figures: the profiler slows what it watches
            profiler = cProfile.Profile()
            at = now + timedelta(days=args.target_only)
            measure_accounts(at, f", {at:%Y-%m-%d}, under the profiler: not a figure", profiler)
            profiler.dump_stats(str(args.profile))
            say(f"  profile of that run (its main thread only) written to {args.profile}")
        figures["target_only"] = runs
        if args.json:
            say(json.dumps(figures, default=str))
        return 0

    # Start from no scores and no models, so every run does the same work.
    Score.objects.for_tenant(tenant).delete()
    ScoreHistory.objects.for_tenant(tenant).delete()
    ModelVersion.objects.for_tenant(tenant).delete()
    services._artifacts.clear()
    _vacuum(("scoring_score", "scoring_scorehistory", "scoring_modelversion"))
    figures["rules"] = full_rescore("rule-based: no trained model yet", now)

    if not args.skip_train:
        say("\nTRAINING: model_train per kind (features on weekly snapshots, fit, calibrate, evaluate)")
        figures["training"] = {}
        for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.HEALTH):
            version = services.model_version_start(tenant=tenant, kind=kind, now=now)
            with services.phase_timings() as phases:
                began = time.perf_counter()
                version = services.model_train(tenant=tenant, version_id=version.pk, now=now)
                seconds = time.perf_counter() - began
            rescore = sum(v for k, v in phases.items() if not k.startswith("train.") and ":" not in k)
            metrics = version.metrics or {}
            say(
                f"  {kind:<11} {seconds - rescore:7.1f} s training (+ {rescore:.1f} s rescoring its kind): "
                f"{version.status}, {version.algorithm or '-'}, AUC {metrics.get('auc')}, rule baseline "
                f"{metrics.get('baseline_auc')}, ECE {metrics.get('ece')}, rows {metrics.get('n_train')} + "
                f"{metrics.get('n_calibration')} + {metrics.get('n_eval')}"
                + (f" ({version.error})" if version.error else "")
            )
            _print_phases(say, {k: v for k, v in phases.items() if k.startswith("train.")}, seconds - rescore)
            figures["training"][kind] = {"seconds": round(seconds - rescore, 1), "rescore_seconds": round(rescore, 1),
                                         "status": version.status, "metrics": metrics,
                                         "phases": {k: round(v, 2) for k, v in phases.items()}}  # fmt: skip
        active = ModelVersion.objects.for_tenant(tenant).filter(status=ModelStatus.ACTIVE).count()
        say(f"  active models: {active}")
        figures["models"] = full_rescore("with the trained models, same day", now, args.profile)
        figures["next_day"] = full_rescore(
            "with the trained models, next day: a history row for every score", now + timedelta(days=1)
        )

    if args.changed:
        say(f"\nINCREMENTAL: rescore_changed for {args.changed} changed entities (half accounts, half users)")
        from accounts.models import Account, EndUser

        rng = np.random.default_rng(args.seed)
        account_pks = list(Account.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))
        user_pks = list(EndUser.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))
        half = args.changed // 2
        entities = [("account", int(pk)) for pk in rng.choice(account_pks, args.changed - half, replace=False)]
        entities += [("user", int(pk)) for pk in rng.choice(user_pks, half, replace=False)]
        runs = []
        for _run in range(3):
            with services.phase_timings() as phases:
                began = time.perf_counter()
                services.rescore_changed(tenant, entities, now)
                runs.append(time.perf_counter() - began)
        say(f"  {min(runs):.3f} s best of 3 ({', '.join(f'{r:.3f}' for r in runs)})")
        _print_phases(say, dict(phases), runs[-1])
        figures["incremental"] = {"entities": args.changed, "seconds": round(min(runs), 3),
                                  "phases": {k: round(v, 3) for k, v in phases.items()}}  # fmt: skip

    if args.json:
        say(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
