"""A realistic product-led-growth tenant for demos, tests and benchmarks (issue 4), with its hidden truth.

`generate()` plans a world — accounts of several sizes and industries, their people and roles, trials
that convert or not — and feeds its whole history through the ingestion service layer the API uses
(`signals.services.calls_ingest`), in time-ordered chunks of at most 1,000 calls, each call carrying the
time it describes. What the data cannot show directly (each account's conversion and churn propensity,
each user's activity level) is returned as `GroundTruth`, so tests can compare a model with the best
achievable (oracle) AUC.

The simulation (`World`) is pure and deterministic: the same seed, size and end give the same calls.

How the world works (knobs below):
- An account starts a trial at a random time in the window (stage `Trial`). Its hidden conversion
  propensity p is the logistic of size, industry and a latent "fit". The fit shows from the first hour, as it
  does in real sign-ups, only partly: in the sign-up answer (`use_case`) and in how many onboarding steps the
  owner completes. During the trial, p alone drives activity: how busy the team is, how soon and how many
  teammates are invited, how soon and how many integrations get connected, how much of the activity is key
  events. With probability p it converts (stage `Customer`, a paid plan) 5-30 days after the trial started;
  otherwise it goes dormant after the trial, and some of those trials are closed (stage `Churned`).
- A customer churns with its hidden churn propensity q, 2-9 weeks after converting; its activity decays
  over the four weeks before.
- Users are invited over the trial (and after conversion), first one `Owner`, then `Admin`s and `Member`s;
  some are consultants who also work in a second account with another role. Each user has an activity
  level (champions are much busier), goes quiet for stretches, works mostly on weekdays in office hours.
- Storage use grows with activity and is re-sent weekly (`storage_used_gb` against `storage_limit_gb`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signals.calls import (
    AccountRef,
    AddUsers,
    Call,
    MemberChange,
    PropertyMap,
    Track,
    UpsertAccount,
    UpsertUser,
    UserRef,
    normalize_domain,
    normalize_email,
    parse_properties,
)

if TYPE_CHECKING:
    from plgapp.models import Tenant

# --- knobs ----------------------------------------------------------------------------------------------

CHUNK_SIZE = 1_000  # calls per calls_ingest(), the batch limit of the API
EVENTS_PER_USER_DAY = 4.0  # mean events of an average user on an active weekday at activity level 1
USERS_SCALE = 1.0  # multiplies the users per account (benchmarks scale it down or up)

SIZE_MIX = {"small": 0.6, "mid": 0.3, "large": 0.1}
EMPLOYEES = {"small": (1, 50), "mid": (51, 500), "large": (501, 10_000)}
USERS_PER_ACCOUNT = {"small": (1, 3), "mid": (3, 15), "large": (5, 40)}
# industry -> (share of accounts, effect on the conversion log-odds)
INDUSTRIES = {
    "software": (0.25, 0.6), "fintech": (0.12, 0.3), "retail": (0.15, -0.3), "healthcare": (0.12, 0.0),
    "education": (0.12, -0.5), "media": (0.12, -0.2), "manufacturing": (0.12, -0.4),
}  # fmt: skip
COUNTRIES = {"US": 0.35, "GB": 0.12, "DE": 0.1, "FR": 0.08, "NL": 0.06, "CA": 0.07, "AU": 0.05, "SE": 0.04,
             "ES": 0.04, "IN": 0.05, "BR": 0.04}  # fmt: skip

# Conversion: p = logistic(CONVERSION_BASE + size + industry + FIT_WEIGHT * fit), fit ~ N(0, 1); ~23% convert.
CONVERSION_BASE = -1.6
SIZE_EFFECT = {"small": -0.3, "mid": 0.3, "large": 0.5}
FIT_WEIGHT = 1.4
TRIAL_DAYS = 30
CONVERSION_AFTER_DAYS = (5.0, 30.0)
TRIAL_CLOSED_SHARE = 0.4  # of the trials that do not convert, closed (stage Churned) after the trial
TRIAL_CLOSED_AFTER_DAYS = (0.0, 10.0)  # after the trial's end
# Churn of customers: q = logistic(CHURN_BASE + size - CHURN_FIT_WEIGHT * fit + N(0, CHURN_NOISE)); ~40%.
CHURN_BASE = -0.4
CHURN_SIZE_EFFECT = {"small": 0.4, "mid": 0.0, "large": -0.4}
CHURN_FIT_WEIGHT = 0.8
CHURN_NOISE = 0.7
CUSTOMER_LIFETIME_DAYS = (14.0, 60.0)  # conversion -> churn, for the customers that churn
CHURN_DECAY_DAYS = 28  # activity fades over these days before churning

# What the fit shows on the first day: the sign-up answer (use case -> its affinity with fit; an answer is drawn
# with weight exp(SIGNUP_CLARITY * affinity * fit)), and onboarding steps, each done with probability
# logistic(ONBOARDING_FIT * fit + ONBOARDING_BASE).
USE_CASES = {"team reporting": 1.2, "client dashboards": 0.5, "data exploration": 0.0, "evaluating tools": -0.6,
             "personal project": -1.2}  # fmt: skip
SIGNUP_CLARITY = 2.0
ONBOARDING_STEPS = ("connect_data", "create_report", "invite_team", "set_alert", "share_dashboard")
ONBOARDING_FIT, ONBOARDING_BASE = 1.5, -0.3

# Activity of an account (multiplies its users' rates) by phase.
TRIAL_LEVEL = (0.15, 2.5)  # base + slope * p
DORMANT_LEVEL = 0.05  # trials that ended without converting
CUSTOMER_LEVEL = (1.1, -0.3)  # base + slope * q
WEEKEND_FACTOR = 0.25  # weekdays see 4x the activity of weekend days
OFFICE_HOURS = (8.0, 18.0)  # UTC; OFFICE_SHARE of the sessions start within them
OFFICE_SHARE = 0.85
# Users
ADMIN_SHARE = 0.2
SECOND_ACCOUNT_SHARE = 0.1  # consultants: also in another account, with another role
SECOND_ACCOUNT_WEIGHT = 0.5  # their activity there, relative to their own account
CHAMPION_SHARE = 0.12
OWNER_CHAMPION_SHARE = 0.6
CHAMPION_BOOST = 3.0
ACTIVITY_SIGMA = 0.6  # log-normal spread of the users' activity levels
QUIET_START = 0.05  # daily chance that an active user goes quiet ...
QUIET_END = 0.12  # ... and that a quiet one comes back (quiet stretches last ~8 days)
TRIAL_JOINERS = (0.15, 1.1)  # share of the team invited during the trial: base + slope * p
TRIAL_INVITE_DAYS = (0.3, 2.0, 19.0)  # invited after uniform(first, second + third * (1 - p)) days of the trial
INTEGRATION_TRIES = 3  # during a trial, each try connects an integration with probability p ...
INTEGRATION_DAYS = (0.2, 2.0, 18.0)  # ... after uniform(first, second + third * (1 - p)) days
# Plans: name -> (seat_limit, storage_limit_gb); customers get a plan by size.
PLANS = {"trial": (10, 5), "team": (10, 50), "business": (50, 500), "enterprise": (500, 5_000)}
PLAN_BY_SIZE = {"small": "team", "mid": "business", "large": "enterprise"}
STORAGE_SIZE_FACTOR = {"small": 1.0, "mid": 3.0, "large": 10.0}
STORAGE_START_GB = 0.05  # x size factor
STORAGE_WEEKLY_GB = 0.03  # x size factor, plus STORAGE_GB_PER_EVENT x size factor per event
STORAGE_GB_PER_EVENT = 0.004

EVENT_NAMES = (
    "login", "report_created", "dashboard_viewed", "teammate_invited", "integration_connected",
    "export_downloaded", "alert_created", "onboarding_step_completed",
)  # fmt: skip
KEY_EVENTS = ("report_created", "alert_created")
INTEGRATIONS = ("slack", "hubspot", "salesforce", "jira", "github", "bigquery")
DASHBOARDS = ("Overview", "Revenue", "Pipeline", "Retention", "Usage", "Marketing")
ROLE_ELSEWHERE = {"Owner": "Admin", "Admin": "Member", "Member": "Admin"}
TITLES = {
    "Owner": ("Founder", "CEO", "Head of Operations", "VP Engineering", "Head of Data", "COO"),
    "Admin": ("IT Manager", "Engineering Manager", "Operations Lead", "Data Lead", "RevOps Manager"),
    "Member": ("Analyst", "Engineer", "Marketing Manager", "Sales Manager", "Designer", "Product Manager",
               "Support Specialist", "Account Executive", "Data Scientist"),
}  # fmt: skip
FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Kira", "Liam", "Maya",
    "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Xena", "Yusuf", "Zoe",
    "Anna", "Bruno", "Clara", "David", "Elena", "Farah", "Greg", "Hana", "Ivan", "Julia", "Karl", "Lena",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jansen", "Müller", "Garcia", "Rossi", "Dubois", "Kowalski", "Nguyen", "Patel", "Kim", "Silva",
    "Johansson", "Brown", "Peeters", "Novak", "Cohen", "Okafor", "Tanaka", "Lopez", "Martin", "Fischer",
    "Walker", "Khan", "Horvat", "Berg", "Moreau", "Costa", "Wright", "Larsen", "Young",
)  # fmt: skip
COMPANY_PREFIXES = (
    "Blue", "North", "Bright", "Iron", "Silver", "Green", "Swift", "Clear", "Red", "Stone", "Cloud", "Sun",
    "Oak", "Peak", "River", "Nova", "Pine", "Star", "True", "Bold",
)  # fmt: skip
COMPANY_SUFFIXES = (
    "wave", "field", "works", "stack", "labs", "point", "bridge", "forge", "line", "path", "mint", "leaf",
)  # fmt: skip
COMPANY_KINDS = ("Analytics", "Systems", "Health", "Retail", "Media", "Finance", "Learning", "Logistics", "Group")

DAY = timedelta(days=1)


# --- the truth ------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class AccountTruth:
    propensity: float
    converted: bool  # reached Customer by `end` (the label the data shows)
    trial_started_at: str
    converted_at: str | None
    churn_propensity: float
    churned_at: str | None  # reached Churned by `end` (a customer that left, or a closed trial)
    size: str
    industry: str
    domain: str
    will_convert: bool  # the hidden draw, also for trials still running at `end`


@dataclass(frozen=True)
class UserTruth:
    accounts: dict[str, str]  # account id -> role
    activity: float
    email: str
    champion: bool


@dataclass(frozen=True)
class Counts:
    accounts: int = 0
    users: int = 0
    memberships: int = 0
    events: int = 0
    calls: int = 0


@dataclass(frozen=True)
class GroundTruth:
    tenant: str
    seed: int
    end: datetime
    days: int
    accounts: dict[str, AccountTruth]
    users: dict[str, UserTruth]
    counts: Counts = field(default_factory=Counts)
    seconds: float = field(default=0.0, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "seed": self.seed, "end": self.end.isoformat(), "days": self.days,
            "accounts": {key: asdict(value) for key, value in self.accounts.items()},
            "users": {key: asdict(value) for key, value in self.users.items()},
            "counts": asdict(self.counts),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroundTruth:
        return cls(
            tenant=data["tenant"], seed=data["seed"], end=datetime.fromisoformat(data["end"]), days=data["days"],
            accounts={key: AccountTruth(**value) for key, value in data["accounts"].items()},
            users={key: UserTruth(**value) for key, value in data["users"].items()},
            counts=Counts(**data.get("counts", {})),
        )  # fmt: skip

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path | str) -> GroundTruth:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def decided_accounts(self) -> dict[str, AccountTruth]:
        """Accounts whose trial ended by `end`: their conversion is known (converted == will_convert)."""
        cutoff = self.end - timedelta(days=TRIAL_DAYS)
        return {k: a for k, a in self.accounts.items() if datetime.fromisoformat(a.trial_started_at) <= cutoff}

    def oracle_auc(self) -> float:
        """AUC of the hidden propensity against the outcome of the decided trials: what no model can beat."""
        decided = self.decided_accounts().values()
        return auc([a.propensity for a in decided], [a.converted for a in decided])

    def conversion_chance(self, account: str, at: datetime, horizon_days: float) -> float:
        """The best forecast the hidden truth allows that `account`, a trial still running at `at` (not converted,
        not closed), reaches a paying stage within `horizon_days`: its propensity, updated by how much of its
        conversion window (CONVERSION_AFTER_DAYS after the trial started) has passed without a conversion. The
        oracle of a model's training row; 0 for a trial past its window."""
        truth = self.accounts[account]
        age = (at - datetime.fromisoformat(truth.trial_started_at)) / DAY
        low, high = CONVERSION_AFTER_DAYS

        def converts_after(days: float) -> float:  # of the trials that convert, the share converting after `days`
            return min(1.0, max(0.0, (high - days) / (high - low)))

        p = truth.propensity
        running = p * converts_after(age) + (1.0 - p)
        return p * (converts_after(age) - converts_after(age + horizon_days)) / running


def auc(scores: list[float], labels: list[bool]) -> float:
    """Mann-Whitney AUC (ties count half); nan without both classes."""
    pairs = sorted(zip(scores, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    rank_sum, n = 0.0, 0
    while n < len(pairs):
        m = n
        while m < len(pairs) and pairs[m][0] == pairs[n][0]:
            m += 1
        average_rank = (n + 1 + m) / 2
        rank_sum += average_rank * sum(1 for _score, label in pairs[n:m] if label)
        n = m
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# --- the world ------------------------------------------------------------------------------------------


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _pick[T](rng: random.Random, weights: dict[T, float]) -> T:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


@dataclass(eq=False)
class _Account:
    n: int
    ref: AccountRef
    domain: str
    name: str
    size: str
    industry: str
    employees: int
    country: str
    propensity: float
    churn_propensity: float
    trial_started_at: datetime
    will_convert: bool
    converts_at: datetime | None  # planned, may lie after `end`
    churns_at: datetime | None  # planned
    trial_weights: list[float]  # cumulative weights of ACTIVITY_EVENTS during the trial
    onboarding_steps: int = 0  # of ONBOARDING_STEPS, done in order on the first day
    storage_used: float = 0.0
    storage_limit: float = 0.0
    events_since_tick: int = 0
    next_tick: datetime | None = None

    @property
    def external_id(self) -> str:
        assert self.ref.external_id is not None
        return self.ref.external_id

    def level(self, at: datetime) -> float:
        if at < self.trial_started_at or (self.churns_at is not None and at >= self.churns_at):
            return 0.0
        if self.converts_at is not None and at >= self.converts_at:
            level = CUSTOMER_LEVEL[0] + CUSTOMER_LEVEL[1] * self.churn_propensity
            if self.churns_at is not None:
                days_left = (self.churns_at - at) / DAY
                if days_left < CHURN_DECAY_DAYS:
                    level *= max(0.05, days_left / CHURN_DECAY_DAYS) ** 1.5
            return level
        if at - self.trial_started_at >= timedelta(days=TRIAL_DAYS):
            return DORMANT_LEVEL
        return TRIAL_LEVEL[0] + TRIAL_LEVEL[1] * self.propensity


@dataclass(eq=False)
class _User:
    n: int
    ref: UserRef  # userId and email, as the parsers produce them
    name: str
    activity: float
    champion: bool
    rng: random.Random
    memberships: list[_Member] = field(default_factory=list)
    is_quiet: bool = False

    @property
    def external_id(self) -> str:
        assert self.ref.external_id is not None
        return self.ref.external_id


@dataclass(eq=False)
class _Member:
    user: _User
    account: _Account
    role: str
    joined_at: datetime
    weight: float = 1.0


ACTIVITY_EVENTS = ("dashboard_viewed", "report_created", "export_downloaded", "alert_created")
CUSTOMER_WEIGHTS = list(itertools.accumulate((4.0, 2.5, 1.5, 1.0)))


def _trial_weights(p: float) -> list[float]:
    """Key events (reports, alerts) make up more of a trial's activity the higher its propensity."""
    weights = (4.0, 0.5 + 6.0 * p, 1.0, 0.2 + 3.0 * p)
    return list(itertools.accumulate(weights))


def _signup_answer(rng: random.Random, fit: float) -> str:
    """The sign-up form's "what will you use it for?": teams that fit answer differently, not always."""
    return _pick(rng, {name: math.exp(SIGNUP_CLARITY * affinity * fit) for name, affinity in USE_CASES.items()})


class World:
    """The planned world and its history as calls; single use: iterate `calls()` once, then `truth()`."""

    def __init__(
        self, *, accounts: int, seed: int, days: int, end: datetime,
        events_per_user_day: float = EVENTS_PER_USER_DAY, users_scale: float = USERS_SCALE,
    ) -> None:  # fmt: skip
        if accounts < 1 or days < 1:
            raise ValueError("accounts and days must be at least 1")
        if end.tzinfo is None:
            raise ValueError("end must be timezone-aware")
        self.seed, self.days = seed, days
        self.end = end.astimezone(UTC)
        self.start = self.end - timedelta(days=days)
        self.events_per_user_day = events_per_user_day
        self.users_scale = users_scale
        self._seq = 0
        self.scheduled: list[tuple[datetime, int, Call]] = []
        self.accounts: list[_Account] = []
        self.users: list[_User] = []
        self._tally = dict.fromkeys(("accounts", "users", "memberships", "events", "calls"), 0)
        self._plan(accounts)

    # -- planning --

    def _at(self, at: datetime) -> tuple[datetime, int]:
        self._seq += 1
        return at, self._seq

    def _schedule(self, at: datetime, call: Call) -> None:
        if self.start <= at <= self.end:
            self.scheduled.append((*self._at(at), call))

    def _plan(self, count: int) -> None:
        rng = random.Random(f"plg-generator:{self.seed}:plan")  # noqa: S311 - simulation, not security
        domains: set[str] = set()
        emails: set[str] = set()
        span = (self.end - self.start - timedelta(hours=1)) / DAY
        for n in range(1, count + 1):
            account = self._plan_account(rng, n, domains, span)
            self.accounts.append(account)
            self._plan_team(rng, account, emails)
        self._plan_consultants(rng)
        self.scheduled.sort(key=lambda item: (item[0], item[1]))

    def _plan_account(self, rng: random.Random, n: int, domains: set[str], span: float) -> _Account:
        size = _pick(rng, SIZE_MIX)
        industry = _pick(rng, {name: share for name, (share, _effect) in INDUSTRIES.items()})
        low, high = EMPLOYEES[size]
        employees = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        fit = rng.gauss(0.0, 1.0)
        use_case = _signup_answer(rng, fit)
        onboarding = sum(rng.random() < _logistic(ONBOARDING_FIT * fit + ONBOARDING_BASE) for _step in ONBOARDING_STEPS)
        p = _logistic(CONVERSION_BASE + SIZE_EFFECT[size] + INDUSTRIES[industry][1] + FIT_WEIGHT * fit)
        q = _logistic(CHURN_BASE + CHURN_SIZE_EFFECT[size] - CHURN_FIT_WEIGHT * fit + rng.gauss(0.0, CHURN_NOISE))
        day = self.start + timedelta(days=math.floor(rng.uniform(0, span)))
        started = day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=rng.uniform(*OFFICE_HOURS))
        started = min(max(started, self.start), self.end - timedelta(hours=1)).replace(microsecond=0)
        will_convert = rng.random() < p
        converts_at = churns_at = None
        if will_convert:
            converts_at = (started + timedelta(days=rng.uniform(*CONVERSION_AFTER_DAYS))).replace(microsecond=0)
            if rng.random() < q:
                churns_at = converts_at + timedelta(days=rng.uniform(*CUSTOMER_LIFETIME_DAYS))
        elif rng.random() < TRIAL_CLOSED_SHARE:
            churns_at = started + timedelta(days=TRIAL_DAYS + rng.uniform(*TRIAL_CLOSED_AFTER_DAYS))
        churns_at = churns_at.replace(microsecond=0) if churns_at else None
        name = f"{rng.choice(COMPANY_PREFIXES)}{rng.choice(COMPANY_SUFFIXES)} {rng.choice(COMPANY_KINDS)}"
        domain = normalize_domain(name.lower().replace(" ", "-") + ".example")
        if domain in domains:
            domain = normalize_domain(f"{name.lower().replace(' ', '-')}-{n}.example")
        domains.add(domain)
        account = _Account(
            n=n, ref=AccountRef(external_id=f"acct-{n:06d}", domain=domain), domain=domain, name=name, size=size,
            industry=industry, employees=employees, country=_pick(rng, COUNTRIES), propensity=p,
            churn_propensity=q, trial_started_at=started, will_convert=will_convert, converts_at=converts_at,
            churns_at=churns_at, trial_weights=_trial_weights(p), onboarding_steps=onboarding,
        )  # fmt: skip
        seats, storage = PLANS["trial"]
        account.storage_used = round(STORAGE_START_GB * STORAGE_SIZE_FACTOR[size], 2)
        account.storage_limit = storage
        account.next_tick = started + timedelta(days=7)
        self._schedule(started, self._upsert_account(account, started, {
            "name": name, "industry": industry, "employees": employees, "country": account.country,
            "plan": "trial", "seat_limit": seats, "storage_limit_gb": storage,
            "storage_used_gb": account.storage_used, "stage": "Trial", "use_case": use_case,
        }))  # fmt: skip
        if converts_at is not None:
            plan = PLAN_BY_SIZE[size]
            seats, storage = PLANS[plan]
            self._schedule(converts_at, self._upsert_account(account, converts_at, {
                "stage": "Customer", "plan": plan, "seat_limit": seats, "storage_limit_gb": storage,
            }))  # fmt: skip
        if churns_at is not None:
            self._schedule(churns_at, self._upsert_account(account, churns_at, {"stage": "Churned"}))
        return account

    def _upsert_account(self, account: _Account, at: datetime, properties: dict[str, Any]) -> UpsertAccount:
        return UpsertAccount(account=account.ref, at=at, properties=parse_properties(properties, "properties"))

    def _plan_team(self, rng: random.Random, account: _Account, emails: set[str]) -> None:
        low, high = USERS_PER_ACCOUNT[account.size]
        team = max(1, round(rng.randint(low, high) * self.users_scale))
        in_trial = min(team - 1, round((team - 1) * (TRIAL_JOINERS[0] + TRIAL_JOINERS[1] * account.propensity)))
        owner: _User | None = None
        for k in range(team):
            if k == 0:
                role, joined = "Owner", account.trial_started_at + timedelta(seconds=30)
            else:
                role = "Admin" if rng.random() < ADMIN_SHARE else "Member"
                if k <= in_trial:  # the keener the team, the sooner
                    first, base, slope = TRIAL_INVITE_DAYS
                    joined = account.trial_started_at + timedelta(
                        days=rng.uniform(first, base + slope * (1.0 - account.propensity))
                    )
                elif account.converts_at is not None:
                    joined = account.converts_at + timedelta(days=rng.uniform(1.0, 60.0))
                else:
                    continue  # never invited: the trial did not convert
                joined = joined.replace(microsecond=0)
                if account.level(joined) <= 0:
                    continue
            user = self._new_user(rng, account, emails, is_owner=k == 0)
            member = _Member(user=user, account=account, role=role, joined_at=joined)
            user.memberships.append(member)
            self._schedule_join(rng, member, inviter=owner)
            if k == 0:
                owner = user
        assert owner is not None
        at = account.trial_started_at + timedelta(minutes=2)
        for step in ONBOARDING_STEPS[: account.onboarding_steps]:  # the owner's first session
            at += timedelta(minutes=rng.uniform(1.0, 15.0))
            self._schedule(at.replace(microsecond=0), Track(
                name="onboarding_step_completed", at=at.replace(microsecond=0),
                user=UserRef(external_id=owner.external_id), account=AccountRef(external_id=account.external_id),
                properties=parse_properties({"step": step}, "metadata", allow_lists=False),
            ))  # fmt: skip
        first, base, slope = INTEGRATION_DAYS
        for _try in range(INTEGRATION_TRIES):  # the owner connects integrations, more and sooner the higher p
            days = rng.uniform(first, base + slope * (1.0 - account.propensity))
            at = (account.trial_started_at + timedelta(days=days)).replace(microsecond=0)
            if rng.random() < account.propensity and account.level(at) > 0:
                self._schedule(at, Track(
                    name="integration_connected", at=at, user=UserRef(external_id=owner.external_id),
                    account=AccountRef(external_id=account.external_id),
                    properties=_metadata(rng, "integration_connected"),
                ))  # fmt: skip

    def _new_user(self, rng: random.Random, account: _Account, emails: set[str], *, is_owner: bool) -> _User:
        n = len(self.users) + 1
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("ü", "ue")
        email = normalize_email(f"{local}@{account.domain}")
        if email in emails:
            email = normalize_email(f"{local}{n}@{account.domain}")
        emails.add(email)
        champion = rng.random() < (OWNER_CHAMPION_SHARE if is_owner else CHAMPION_SHARE)
        activity = rng.lognormvariate(0.0, ACTIVITY_SIGMA) * (CHAMPION_BOOST if champion else 1.0)
        user = _User(
            n=n, ref=UserRef(external_id=f"user-{n:06d}", email=email), name=f"{first} {last}",
            activity=round(activity, 4), champion=champion,
            rng=random.Random(f"plg-generator:{self.seed}:user:{n}"),  # noqa: S311 - simulation
        )  # fmt: skip
        self.users.append(user)
        return user

    def _schedule_join(self, rng: random.Random, member: _Member, *, inviter: _User | None) -> None:
        user, account, at = member.user, member.account, member.joined_at
        if inviter is not None and len(user.memberships) == 1:
            invited = max(at - timedelta(hours=rng.uniform(1.0, 36.0)), account.trial_started_at + DAY / 2)
            invited = invited.replace(microsecond=0)
            metadata = {"source": "web", "duration_ms": rng.randint(800, 9000), "role": member.role}
            self._schedule(invited, Track(
                name="teammate_invited", at=invited, user=UserRef(external_id=inviter.external_id),
                account=AccountRef(external_id=account.external_id),
                properties=parse_properties(metadata, "metadata", allow_lists=False),
            ))  # fmt: skip
        if len(user.memberships) == 1:
            title = rng.choice(TITLES[member.role])
            self._schedule(at, UpsertUser(
                user=user.ref, at=at, properties=parse_properties({"name": user.name, "title": title}, "properties"),
            ))  # fmt: skip
        self._schedule(at, AddUsers(  # same time as the upsert, after it (the sequence number breaks the tie)
            account=AccountRef(external_id=account.external_id), at=at,
            users=(MemberChange(user=user.ref, properties=parse_properties({"role": member.role}, "properties")),),
        ))  # fmt: skip

    def _plan_consultants(self, rng: random.Random) -> None:
        if len(self.accounts) < 2:
            return
        for user in list(self.users):
            home = user.memberships[0]
            if home.joined_at > self.end or rng.random() >= SECOND_ACCOUNT_SHARE:
                continue
            other = rng.choice([a for a in self.accounts if a is not home.account])
            joined = (max(home.joined_at, other.trial_started_at) + timedelta(days=rng.uniform(1.0, 14.0))).replace(
                microsecond=0
            )
            if joined > self.end or other.level(joined) <= 0:
                continue
            member = _Member(user=user, account=other, role=ROLE_ELSEWHERE[home.role], joined_at=joined,
                             weight=SECOND_ACCOUNT_WEIGHT)  # fmt: skip
            user.memberships.append(member)
            self._schedule_join(rng, member, inviter=None)

    # -- simulation --

    def calls(self) -> Iterator[Call]:
        """Every call of the world's history, in time order."""
        scheduled = iter(self.scheduled)
        pending = next(scheduled, None)
        members = [m for user in self.users for m in user.memberships if m.joined_at <= self.end]
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        while midnight <= self.end:
            tomorrow = midnight + DAY
            today: list[tuple[datetime, int, Call]] = []
            while pending is not None and pending[0] < tomorrow:
                today.append(pending)
                pending = next(scheduled, None)
            for account in self.accounts:
                today.extend(self._storage_ticks(account, tomorrow))
            weekend = midnight.weekday() >= 5
            for user in self.users:  # quiet stretches: a two-state chain, one step a day
                draw = user.rng.random()
                user.is_quiet = draw >= QUIET_END if user.is_quiet else draw < QUIET_START
            for member in members:
                today.extend(self._day_of(member, midnight, weekend=weekend))
            today.sort(key=lambda item: (item[0], item[1]))
            for _at, _seq, call in today:
                self._count(call)
                yield call
            midnight = tomorrow

    def _storage_ticks(self, account: _Account, before: datetime) -> Iterator[tuple[datetime, int, Call]]:
        while account.next_tick is not None and account.next_tick < before:
            at = account.next_tick
            if at > self.end or (account.churns_at is not None and at >= account.churns_at):
                account.next_tick = None
                return
            account.next_tick = at + timedelta(days=7)
            if account.converts_at is not None and at >= account.converts_at:
                account.storage_limit = PLANS[PLAN_BY_SIZE[account.size]][1]
            factor = STORAGE_SIZE_FACTOR[account.size]
            grown = account.storage_used + factor * (
                STORAGE_WEEKLY_GB + STORAGE_GB_PER_EVENT * account.events_since_tick
            )
            account.storage_used = round(min(grown, account.storage_limit), 2)
            account.events_since_tick = 0
            yield (*self._at(at), self._upsert_account(account, at, {"storage_used_gb": account.storage_used}))

    def _day_of(self, member: _Member, midnight: datetime, *, weekend: bool) -> list[tuple[datetime, int, Call]]:
        user, account = member.user, member.account
        rng = user.rng
        noon = midnight + DAY / 2
        level = account.level(noon)
        if user.is_quiet or level <= 0 or member.joined_at >= midnight + DAY:
            return []
        lam = self.events_per_user_day * user.activity * level * member.weight * (WEEKEND_FACTOR if weekend else 1)
        count = _poisson(rng, lam)
        if not count:
            return []
        hours = rng.uniform(*OFFICE_HOURS) if rng.random() < OFFICE_SHARE else rng.uniform(0.0, 23.5)
        at = midnight + timedelta(hours=hours)
        is_customer = account.converts_at is not None and noon >= account.converts_at
        weights = CUSTOMER_WEIGHTS if is_customer else account.trial_weights
        out: list[tuple[datetime, int, Call]] = []
        user_ref, account_ref = UserRef(external_id=user.external_id), AccountRef(external_id=account.external_id)
        for k in range(count):
            at += timedelta(seconds=rng.expovariate(1 / 120))
            stamp = at.replace(microsecond=0)
            # A session opens with a login; then the user's work, mixed by the account's phase.
            name = "login" if k == 0 else ACTIVITY_EVENTS[bisect.bisect(weights, rng.random() * weights[-1])]
            if not (member.joined_at < stamp <= self.end and self.start <= stamp) or account.level(stamp) <= 0:
                continue
            account.events_since_tick += 1
            call = Track(name=name, at=stamp, user=user_ref, account=account_ref, properties=_metadata(rng, name))
            out.append((*self._at(stamp), call))
        return out

    def _count(self, call: Call) -> None:
        tally = self._tally
        tally["calls"] += 1
        if isinstance(call, Track):
            tally["events"] += 1
        elif isinstance(call, AddUsers):
            tally["memberships"] += len(call.users)
        elif isinstance(call, UpsertUser):
            tally["users"] += 1
        elif isinstance(call, UpsertAccount) and call.properties.get("stage") == "Trial":
            tally["accounts"] += 1

    @property
    def counts(self) -> Counts:
        """What the calls yielded so far hold."""
        return Counts(**self._tally)

    # -- truth --

    def truth(self, *, tenant: str, seconds: float = 0.0) -> GroundTruth:
        accounts = {}
        for a in self.accounts:
            converted_at = a.converts_at if a.converts_at is not None and a.converts_at <= self.end else None
            churned_at = a.churns_at if a.churns_at is not None and a.churns_at <= self.end else None
            accounts[a.external_id] = AccountTruth(
                propensity=round(a.propensity, 6), converted=converted_at is not None,
                trial_started_at=a.trial_started_at.isoformat(), converted_at=_iso(converted_at),
                churn_propensity=round(a.churn_propensity, 6), churned_at=_iso(churned_at), size=a.size,
                industry=a.industry, domain=a.domain, will_convert=a.will_convert,
            )  # fmt: skip
        users = {
            u.external_id: UserTruth(
                accounts={m.account.external_id: m.role for m in u.memberships if m.joined_at <= self.end},
                activity=u.activity,
                email=u.ref.email or "",
                champion=u.champion,
            )
            for u in self.users
            if u.memberships[0].joined_at <= self.end
        }
        return GroundTruth(
            tenant=tenant, seed=self.seed, end=self.end, days=self.days, accounts=accounts, users=users,
            counts=self.counts, seconds=seconds,
        )  # fmt: skip


def _metadata(rng: random.Random, name: str) -> PropertyMap:
    metadata: dict[str, Any] = {
        "source": "api" if rng.random() < 0.15 else "web",
        "duration_ms": round(rng.lognormvariate(7.0, 0.9)),
    }
    if name == "report_created":
        metadata["widgets"] = rng.randint(1, 12)
    elif name == "dashboard_viewed":
        metadata["dashboard"] = rng.choice(DASHBOARDS)
    elif name == "export_downloaded":
        metadata["format"] = rng.choice(("csv", "xlsx", "pdf"))
    elif name == "alert_created":
        metadata["channel"] = rng.choice(("email", "slack"))
    elif name == "integration_connected":
        metadata["integration"] = rng.choice(INTEGRATIONS)
    return parse_properties(metadata, "metadata", allow_lists=False)


# --- ingestion ------------------------------------------------------------------------------------------


def chunks(calls: Iterator[Call], size: int = CHUNK_SIZE) -> Iterator[list[tuple[int, Call]]]:
    chunk: list[tuple[int, Call]] = []
    for call in calls:
        chunk.append((len(chunk), call))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class GenerationFailed(RuntimeError):
    pass


def generate(
    tenant: Tenant, *, accounts: int, seed: int, days: int, end: datetime,
    events_per_user_day: float = EVENTS_PER_USER_DAY, users_scale: float = USERS_SCALE,
    now: datetime | None = None, progress: Callable[[Counts], None] | None = None,
) -> GroundTruth:  # fmt: skip
    """Generate the world into `tenant` through the ingestion service layer; return its hidden truth."""
    from django.utils import timezone

    from signals.services import calls_ingest

    began = time.perf_counter()
    received = now or timezone.now()
    world = World(
        accounts=accounts, seed=seed, days=days, end=end,
        events_per_user_day=events_per_user_day, users_scale=users_scale,
    )  # fmt: skip
    for chunk in chunks(world.calls()):
        result = calls_ingest(tenant=tenant, calls=chunk, now=received)
        if result.rejected:
            first = result.rejected[0]
            raise GenerationFailed(f"{len(result.rejected)} calls rejected, e.g. {chunk[first.index][1]!r}: "
                                   f"{first.message}")  # fmt: skip
        if progress is not None:
            progress(world.counts)
    return world.truth(tenant=tenant.slug, seconds=time.perf_counter() - began)
