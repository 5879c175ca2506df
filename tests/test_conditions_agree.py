"""Both backends of the condition language have one meaning (DESIGN §8): for random conditions over random data in a
real PostgreSQL tenant, the Python evaluator (playbooks.conditions.evaluate over facts_for) and the SQL compiler
(playbooks.compiler.condition_filter) select the same entities — for accounts, users and memberships — and the
SQL expression is never NULL. Plus: a condition compiled for one tenant never matches or reads another's rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Account, EndUser, Membership
from playbooks import conditions as c
from playbooks.compiler import condition_filter
from playbooks.facts import facts_for
from plgapp.models import Tenant
from scoring.models import Score
from signals.models import DailyRollup
from tests.conftest import TenantWorld

NOW = datetime(2025, 6, 15, 12, 34, 56, 789012, tzinfo=UTC)
TODAY = NOW.date()
MODELS: dict[str, Any] = {"account": Account, "user": EndUser, "membership": Membership}
EXAMPLES = 120  # per root: 5-13 s each on a 2-core machine (each example: one random world in a savepoint)

# --- values --------------------------------------------------------------------------------------------------

WORDS = ["", "Trial", "trial", "Tri", "Pro", "Admin", "Owner", "Member", "a%b_c", "Ünï", "2025-06-10T08:00:00Z"]
texts = st.sampled_from(WORDS)
ODD_NUMBERS = [-0.0, 1e-9, 2**60, 10**305, -(10**305), 1e305]  # beyond ±1e300: missing
numbers = st.one_of(
    st.sampled_from([0, 0.5, 0.75, 1, 3, 7]),
    st.integers(-3, 12),
    st.sampled_from(ODD_NUMBERS),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
# Instants around NOW, on and beside the boundaries of the day counts the conditions use (and in the future).
DAYS = [-2, 0, 0.5, 1, 7, 30, 365, 400]
moments = st.builds(
    lambda days, nudge: NOW - timedelta(days=days) + nudge,
    st.sampled_from(DAYS),
    st.sampled_from([timedelta(0), timedelta(microseconds=1), -timedelta(microseconds=1), timedelta(hours=5)]),
)


def timezone_of(hours: int, minutes: int) -> timezone:
    sign = 1 if hours >= 0 else -1
    return timezone(sign * timedelta(hours=abs(hours), minutes=minutes))


def date_texts(moment: datetime) -> list[str]:
    """The ways a client may write `moment` — and a few texts that look like dates but are not datetimes."""
    utc = moment.astimezone(UTC)
    shifted = moment.astimezone(timezone_of(5, 30))
    west = moment.astimezone(timezone_of(-8, 0))
    return [
        utc.isoformat().replace("+00:00", "Z"),
        utc.isoformat(),
        shifted.isoformat(),
        west.strftime("%Y-%m-%dT%H:%M:%S.%f") + "-0800",
        utc.strftime("%Y-%m-%dT%H:%M:%S.%f"),  # no offset: UTC
        utc.strftime("%Y-%m-%d %H:%M"),  # space, no seconds
        utc.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z",  # nanoseconds: cut to microseconds
        utc.strftime("%Y-%m-%dT%H:%M:%S") + "+15:00",  # offset beyond ±14h: not a datetime, a text
        "2025-02-30T10:00:00Z",  # no such day: a text
        utc.strftime("%Y-%m-%d"),  # a date alone is a text as a value
    ]


datetime_texts = moments.flatmap(lambda moment: st.sampled_from(date_texts(moment)))
lists = st.lists(st.one_of(texts, texts, st.just(["Pro"]), st.just(1)), max_size=3)
junk = st.one_of(texts, numbers, st.booleans(), datetime_texts, lists, st.just({"nested": "Pro"}), st.none())


def _mostly(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values of a key's usual type (as the catalogue would have it), now and then anything at all."""
    return st.one_of(strategy, strategy, strategy, junk)


# Property keys and their usual types; "0" is a key that looks like an array index.
KEY_TYPES = {"plan": "text", "seats": "number", "trial_end": "datetime", "tags": "list", "flag": "boolean", "0": "text"}
KEYS = list(KEY_TYPES)
TYPED = {"text": texts, "number": numbers, "datetime": datetime_texts, "list": lists, "boolean": st.booleans()}
properties = st.fixed_dictionaries({}, optional={key: _mostly(TYPED[kind]) for key, kind in KEY_TYPES.items()})
EVENTS = ["login", "export"]

# --- worlds --------------------------------------------------------------------------------------------------


@dataclass
class World:
    accounts: list[dict[str, Any]]
    users: list[dict[str, Any]]
    memberships: list[dict[str, Any]]  # account index, user index, properties, joined_at
    scores: list[tuple[str, str, int, float, dict[str, Any]]]  # kind, entity type, index, value, details
    rollups: list[tuple[str, int, int, str, int, int]]  # level, account index, user index, name, days ago, count


def _identifier(prefix: str | None, n: int, suffix: str = "") -> str | None:
    return None if prefix is None else f"{prefix}{n}{suffix}"


identifier_prefixes = st.sampled_from([None, "acme", "Acme", "tri"])
stages = st.sampled_from([None, "", "Trial", "trial", "Customer"])
maybe_moment = st.one_of(st.none(), moments)
activation = st.one_of(st.none(), numbers, st.sampled_from(["0.8", True]))
score_value = st.sampled_from([0.0, 0.5, 0.75, 0.7500001, 1.0]) | st.floats(0, 1)


def _bucket(row: tuple[str, int, int, str, int, int]) -> tuple[Any, ...]:
    """The DailyRollup unique key of a generated rollup row."""
    level, account, user, name, ago, _count = row
    return level, account if level != "user" else -1, user if level != "account" else -1, name, ago


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_accounts = draw(st.integers(1, 6))
    n_users = draw(st.integers(1, 6))
    accounts = [
        {
            "external_id": _identifier(draw(identifier_prefixes), n),
            "domain": _identifier(draw(identifier_prefixes), n, ".io"),
            "name": draw(texts),
            "stage": draw(stages),
            "stage_changed_at": draw(maybe_moment),
            "created_at": draw(moments),
            "properties": draw(properties),
        }
        for n in range(n_accounts)
    ]
    users = [
        {
            "external_id": _identifier(draw(identifier_prefixes), n),
            "email": _identifier(draw(identifier_prefixes), n, "@x.io"),
            "stage": draw(stages),
            "first_seen_at": draw(maybe_moment),
            "last_seen_at": draw(maybe_moment),
            "properties": draw(properties),
        }
        for n in range(n_users)
    ]
    pairs = draw(st.sets(st.tuples(st.integers(0, n_accounts - 1), st.integers(0, n_users - 1)), min_size=1))
    memberships = [
        {"account": a, "user": u, "properties": draw(properties), "joined_at": draw(moments)} for a, u in sorted(pairs)
    ]
    scores = []
    for kind, entity, count in (("conversion", "account", n_accounts), ("churn", "account", n_accounts),
                                ("health", "user", n_users), ("champion", "membership", len(memberships))):  # fmt: skip
        for index in range(count):
            if draw(st.booleans()):
                details = {"activation": draw(activation)} if entity == "account" and draw(st.booleans()) else {}
                scores.append((kind, entity, index, draw(score_value), details))
    rollups = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["account", "user", "pair"]),
                st.integers(0, n_accounts - 1),
                st.integers(0, n_users - 1),
                st.sampled_from(EVENTS),
                st.sampled_from([-1, 0, 1, 6, 7, 8, 29, 30, 364, 365]),
                st.integers(1, 9),
            ),
            max_size=12,
            unique_by=_bucket,
        )
    )
    return World(accounts, users, memberships, scores, rollups)


@dataclass
class Stored:
    accounts: list[int]
    users: list[int]
    memberships: list[int]


def store(tenant: Tenant, world: World) -> Stored:
    accounts = Account.objects.for_tenant(tenant).bulk_create(Account(**row) for row in world.accounts)
    users = EndUser.objects.for_tenant(tenant).bulk_create(EndUser(**row) for row in world.users)
    memberships = Membership.objects.for_tenant(tenant).bulk_create(
        Membership(account=accounts[row["account"]], end_user=users[row["user"]], properties=row["properties"],
                   joined_at=row["joined_at"], state_changed_at=row["joined_at"])
        for row in world.memberships
    )  # fmt: skip
    ids = {
        "account": [a.pk for a in accounts],
        "user": [u.pk for u in users],
        "membership": [m.pk for m in memberships],
    }
    Score.objects.for_tenant(tenant).bulk_create(
        Score(kind=kind, entity_type=entity, entity_id=ids[entity][index], value=value, percentile=50, grade=3,
              computed_at=NOW, details=details)
        for kind, entity, index, value, details in world.scores
    )  # fmt: skip
    DailyRollup.objects.for_tenant(tenant).bulk_create(
        DailyRollup(account_id=accounts[a].pk if level != "user" else 0,
                    end_user_id=users[u].pk if level != "account" else 0,
                    name=name, day=TODAY - timedelta(days=ago), count=count)
        for level, a, u, name, ago, count in world.rollups
    )  # fmt: skip
    return Stored(ids["account"], ids["user"], ids["membership"])


# --- conditions ----------------------------------------------------------------------------------------------

FIELDS = {
    "account": [
        *(f"account.{name}" for name in c.BUILTINS["account"]),
        "account.score.conversion", "account.score.churn",
        *(f"account.properties.{key}" for key in [*KEYS, "never_sent"]),
    ],
    "user": [
        *(f"user.{name}" for name in c.BUILTINS["user"]),
        "user.score.health",
        *(f"user.properties.{key}" for key in [*KEYS, "never_sent"]),
    ],
    "membership_only": ["membership.joined_at", "membership.score.champion", *(f"membership.{key}" for key in KEYS)],
}  # fmt: skip
ROOT_FIELDS = {
    "account": FIELDS["account"],
    "user": FIELDS["user"],
    "membership": FIELDS["account"] + FIELDS["user"] + FIELDS["membership_only"],
}
ROOT_EVENTS = {"account": ["account"], "user": ["user"], "membership": ["account", "user", "membership"]}

date_literals = st.one_of(
    moments.flatmap(
        lambda moment: st.sampled_from([
            moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            moment.astimezone(timezone_of(5, 30)).isoformat(),
            moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        ])
    ),
    st.sampled_from(["2025-06-08", "2025-06-15", "2024-06-15"]),
)  # fmt: skip
TYPE_OPS = {
    "text": ["eq", "neq", "in", "not_in", "contains", "starts_with", "exists", "not_exists"],
    "number": ["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "not_exists"],
    "boolean": ["eq", "neq", "exists", "not_exists"],
    "datetime": ["gt", "gte", "lt", "lte", "within_last_days", "more_than_days_ago", "exists", "not_exists"],
    "list": ["contains", "exists", "not_exists"],
}


def field_type(name: str) -> str:
    ref = c.field_ref(name)
    return ref.builtin_kind or KEY_TYPES.get(ref.name, "text")


def _literal(op: str, kind: str) -> st.SearchStrategy[Any]:
    """A literal for `op`, mostly of the field's type (so tests often hit), sometimes of another."""
    scalar = {"text": texts, "number": numbers, "boolean": st.booleans()}.get(kind, texts)
    if op in ("eq", "neq"):
        return st.one_of(scalar, scalar, texts, numbers, st.booleans(), datetime_texts)
    if op in ("in", "not_in"):
        return st.one_of(
            st.lists(scalar, min_size=1, max_size=3),
            st.lists(texts, min_size=1, max_size=3),
            st.lists(numbers, min_size=1, max_size=3),
            st.lists(st.booleans(), min_size=1, max_size=2),
        )
    if op in c.ORDER_OPS:
        return st.one_of(numbers, date_literals) if kind != "datetime" else st.one_of(date_literals, numbers)
    if op in ("contains", "starts_with"):
        return st.sampled_from(["", "Tr", "ri", "Pro", "%", "_", "2025-06", "a%b", "Trial"])
    return st.sampled_from([0, 0.5, 1, 7, 30, 365, 400])  # relative dates


@st.composite
def field_tests(draw: st.DrawFn, root: str) -> dict[str, Any]:
    name = draw(st.sampled_from(ROOT_FIELDS[root]))
    kind = field_type(name)
    op = draw(st.one_of(st.sampled_from(TYPE_OPS[kind]), st.sampled_from(TYPE_OPS[kind]), st.sampled_from(c.OPS)))
    if op in c.PRESENCE_OPS:
        return {"field": name, "op": op}
    return {"field": name, "op": op, "value": draw(_literal(op, kind))}


def event_tests(root: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "event": st.sampled_from([*EVENTS, "never_seen"]),
        "of": st.sampled_from(ROOT_EVENTS[root]),
        "within_days": st.sampled_from([1, 2, 7, 8, 30, 31, 365]),
        "op": st.sampled_from(c.EVENT_OPS),
        "value": st.one_of(st.integers(0, 12), st.sampled_from([0.5, 2.5])),
    })  # fmt: skip


def conditions(root: str) -> st.SearchStrategy[Any]:
    leaves = st.one_of(field_tests(root), field_tests(root), event_tests(root))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: {"all": items}),
            st.lists(inner, max_size=3).map(lambda items: {"any": items}),
            inner.map(lambda item: {"not": item}),
        ),
        max_leaves=6,
    )


# --- the property ---------------------------------------------------------------------------------------------


def python_matches(tenant: Tenant, root: str, ids: list[int], condition: c.Condition) -> set[int]:
    facts = facts_for(tenant=tenant, root=root, ids=ids, now=NOW, condition=condition)
    assert set(facts) == set(ids)
    return {pk for pk, entity in facts.items() if c.evaluate(condition, entity, NOW)}


def parts(condition: c.Condition) -> list[c.Condition]:
    """The condition and every condition inside it (each leaf, each group)."""
    match condition:
        case c.All(items) | c.Any(items):
            return [condition, *(part for item in items for part in parts(item))]
        case c.Not(item):
            return [condition, *parts(item)]
    return [condition]


def sql_matches(tenant: Tenant, root: str, condition: c.Condition) -> set[int]:
    expression = condition_filter(condition, tenant=tenant, root=root, now=NOW)
    queryset = MODELS[root].objects.for_tenant(tenant)
    flags = dict(
        queryset.annotate(matched=ExpressionWrapper(expression, output_field=BooleanField())).values_list(
            "pk", "matched"
        )
    )
    assert None not in flags.values(), "a compiled condition is never NULL"
    filtered = set(queryset.filter(expression).values_list("pk", flat=True))
    assert filtered == {pk for pk, matched in flags.items() if matched}
    return filtered


@pytest.mark.parametrize("root", ["account", "user", "membership"])
def test_python_and_sql_backends_select_the_same_entities(tenant_a: TenantWorld, root: str) -> None:
    tenant = tenant_a.tenant
    outcomes: Counter[bool] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds(), raws=st.lists(conditions(root), min_size=1, max_size=6))
    def agree(world: World, raws: list[Any]) -> None:
        with transaction.atomic():
            stored = store(tenant, world)
            ids = {"account": stored.accounts, "user": stored.users, "membership": stored.memberships}[root]
            for raw in raws:
                whole = c.parse(raw)
                # Facts once for the whole condition; every part of it is checked on its own (a disagreement in
                # a leaf can be masked by its siblings in the whole).
                facts = facts_for(tenant=tenant, root=root, ids=ids, now=NOW, condition=whole)
                assert set(facts) == set(ids)
                for part in parts(whole):
                    expected = {pk for pk, entity in facts.items() if c.evaluate(part, entity, NOW)}
                    assert sql_matches(tenant, root, part) == expected, c.to_json(part)
                    outcomes.update(pk in expected for pk in ids)
            transaction.set_rollback(True)

    agree()
    # Not a vacuous agreement: the generated conditions select some entities and leave out others.
    assert outcomes[True] > 0.1 * outcomes.total(), outcomes
    assert outcomes[False] > 0.1 * outcomes.total(), outcomes


# --- every leaf on every edge value -------------------------------------------------------------------------
# Random conditions reach a rare combination (a nanosecond datetime exactly on a literal's instant) only now and
# then; this grid puts every operator with every literal class on a pool holding every edge value.

EDGE_MOMENTS = [
    NOW - timedelta(days=days) + nudge for days in DAYS for nudge in (timedelta(0), timedelta(microseconds=1))
]
EDGE_VALUES: list[Any] = [
    *WORDS, 0, 0.5, 0.75, 1, 7, -3, *ODD_NUMBERS, True, False, None, [], ["Pro", "Trial"], [["Pro"]], [1, "Tri"],
    {"nested": "Pro"}, *(text for moment in EDGE_MOMENTS for text in date_texts(moment)),
]  # fmt: skip
GRID_FIELDS = [
    "account.properties.k", "account.name", "account.stage", "account.external_id", "account.created_at",
    "account.stage_changed_at", "account.score.conversion", "account.activation",
]  # fmt: skip
ORDER_LITERALS: list[Any] = [0, 0.5, 7, -1, "2025-06-15", *(
    text for moment in EDGE_MOMENTS[::2] for text in (moment.isoformat(), moment.strftime("%Y-%m-%dT%H:%M:%S.%f"))
)]  # fmt: skip
GRID_LITERALS: dict[str, list[Any]] = {
    "eq": [*WORDS, 0, 0.5, 1, 7, True, False], "neq": [*WORDS, 0, 0.5, 1, 7, True, False],
    "in": [["Trial", "Pro"], [""], [0, 1], [7.0], [True], [False, True]],
    "not_in": [["Trial", "Pro"], [""], [0, 1], [7.0], [True], [False, True]],
    **dict.fromkeys(c.ORDER_OPS, ORDER_LITERALS),
    "contains": ["", "Tr", "Pro", "%", "_", "2025-06", "Trial"], "starts_with": ["", "Tr", "Pro", "%", "2025-06"],
    "within_last_days": [0, 0.5, 1, 7, 30, 365], "more_than_days_ago": [0, 0.5, 1, 7, 30, 365],
    "exists": [None], "not_exists": [None],
}  # fmt: skip


def test_every_operator_agrees_on_every_edge_value(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    accounts = Account.objects.for_tenant(tenant).bulk_create(
        Account(
            properties={} if value is None and n % 2 else {"k": value}, name=WORDS[n % len(WORDS)],
            external_id=None if n % 5 == 0 else f"Tri{n}", stage=[None, "", "Trial", "Pro"][n % 4],
            created_at=EDGE_MOMENTS[n % len(EDGE_MOMENTS)], stage_changed_at=[None, *EDGE_MOMENTS][n % 17],
        )
        for n, value in enumerate(EDGE_VALUES)
    )  # fmt: skip
    Score.objects.for_tenant(tenant).bulk_create(
        Score(kind=kind, entity_type="account", entity_id=account.pk, value=[0.0, 0.5, 0.75, 1.0][n % 4],
              percentile=50, grade=3, computed_at=NOW, details={"activation": EDGE_VALUES[(n * 7) % len(EDGE_VALUES)]})
        for n, account in enumerate(accounts) for kind in ("conversion", "churn") if (n + len(kind)) % 3
    )  # fmt: skip
    facts = facts_for(tenant=tenant, root="account", ids=[account.pk for account in accounts], now=NOW)
    checked = 0
    for name in GRID_FIELDS:
        for op, literals in GRID_LITERALS.items():
            for literal in literals:
                raw = {"field": name, "op": op} if op in c.PRESENCE_OPS else {"field": name, "op": op, "value": literal}
                condition = c.parse(raw)
                expected = {pk for pk, entity in facts.items() if c.evaluate(condition, entity, NOW)}
                assert sql_matches(tenant, "account", condition) == expected, raw
                checked += 1
    assert checked > 1000


# --- tenant isolation ----------------------------------------------------------------------------------------

ISOLATION_CONDITION = {"all": [
    {"field": "account.stage", "op": "eq", "value": "Trial"},
    {"field": "account.score.conversion", "op": "gt", "value": 0.5},
    {"field": "account.activation", "op": "gte", "value": 0.5},
    {"event": "login", "of": "account", "within_days": 7, "op": "gte", "value": 3},
]}  # fmt: skip


def _trial_account(tenant: Tenant, external_id: str) -> Account:
    return Account.objects.for_tenant(tenant).create(external_id=external_id, stage="Trial", created_at=NOW)


def _evidence(tenant: Tenant, account_id: int) -> None:
    """What makes account `account_id` match ISOLATION_CONDITION, written as rows of `tenant`."""
    Score.objects.for_tenant(tenant).create(
        kind="conversion", entity_type="account", entity_id=account_id, value=0.9, percentile=90, grade=5,
        computed_at=NOW, details={"activation": 0.9},
    )  # fmt: skip
    DailyRollup.objects.for_tenant(tenant).create(account_id=account_id, end_user_id=0, name="login", day=TODAY,
                                                  count=5)  # fmt: skip


def test_a_condition_compiled_for_one_tenant_never_matches_or_reads_another_tenants_rows(
    tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    condition = c.parse(ISOLATION_CONDITION)
    mine = _trial_account(tenant_a.tenant, "same")
    theirs = _trial_account(tenant_b.tenant, "same")
    _evidence(tenant_a.tenant, mine.pk)
    _evidence(tenant_b.tenant, theirs.pk)
    # Tenant B also holds (corrupt) score and rollup rows naming A's other account.
    other = _trial_account(tenant_a.tenant, "other")
    _evidence(tenant_b.tenant, other.pk)

    expression = condition_filter(condition, tenant=tenant_a.tenant, root="account", now=NOW)
    # Applied to every tenant's accounts, A's compiled condition keeps A's matching account only.
    everyone = set(Account.objects.unscoped().filter(expression).values_list("pk", flat=True))

    assert everyone == {mine.pk}
    assert python_matches(tenant_a.tenant, "account", [mine.pk, other.pk], condition) == {mine.pk}


def test_a_condition_reading_an_entity_the_root_lacks_is_refused(tenant_a: TenantWorld) -> None:
    condition = c.parse({"all": [{"field": "user.email", "op": "exists"}]})

    with pytest.raises(c.ConditionInvalid) as caught:
        condition_filter(condition, tenant=tenant_a.tenant, root="account", now=NOW)

    assert list(caught.value.errors) == ["all.0.field"]
