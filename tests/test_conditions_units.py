"""The condition language (DESIGN §8): semantics of the Python evaluator, parse errors by path, the catalogue
validator's messages, what a condition reads, and the catalogue and facts selectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts.models import Account, EndUser, Membership, PropertyDefinition
from playbooks import conditions as c
from playbooks.catalogue import Catalogue, catalogue_get, condition_errors
from playbooks.facts import facts_for
from scoring.models import Score
from signals.models import DailyRollup, EventName
from tests.conftest import TenantWorld

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def account(**kwargs: Any) -> c.Facts:
    """Facts of one account: builtins=, properties=, scores=, events=."""
    return c.Facts(account=c.EntityFacts(**kwargs))


def holds(raw: Any, facts: c.Facts, now: datetime = NOW) -> bool:
    return c.evaluate(c.parse(raw), facts, now)


def prop(op: str, value: Any = None) -> dict[str, Any]:
    test = {"field": "account.properties.plan", "op": op}
    return test if op in c.PRESENCE_OPS else {**test, "value": value}


# --- semantics -----------------------------------------------------------------------------------------------

LITERALS = {
    "eq": "Pro", "neq": "Pro", "in": ["Pro"], "not_in": ["Pro"], "gt": 1, "gte": 1, "lt": 1, "lte": 1,
    "contains": "P", "starts_with": "P", "exists": None, "not_exists": None, "within_last_days": 7,
    "more_than_days_ago": 7,
}  # fmt: skip


@pytest.mark.parametrize("op", c.OPS)
@pytest.mark.parametrize("stored", [{}, {"plan": None}, {"plan": {"tier": "Pro"}}])
def test_on_a_missing_value_every_operator_is_false_except_not_exists(op: str, stored: dict[str, Any]) -> None:
    assert holds(prop(op, LITERALS[op]), account(properties=stored)) is (op == "not_exists")


def test_neq_and_not_in_need_a_value_of_the_literals_kind() -> None:
    assert holds(prop("neq", "Pro"), account(properties={"plan": "Basic"}))
    assert not holds(prop("neq", "Pro"), account(properties={"plan": 3}))
    assert holds(prop("not_in", ["Pro", "Team"]), account(properties={"plan": "Basic"}))
    assert not holds(prop("not_in", ["Pro", "Team"]), account(properties={"plan": True}))


def test_not_is_plain_negation_so_not_eq_matches_a_missing_value() -> None:
    assert holds({"not": prop("eq", "Pro")}, account(properties={}))
    assert not holds({"not": prop("eq", "Pro")}, account(properties={"plan": "Pro"}))


def test_an_empty_all_is_true_and_an_empty_any_is_false() -> None:
    assert holds({"all": []}, account())
    assert not holds({"any": []}, account())


def test_text_comparisons_are_exact_and_case_sensitive() -> None:
    facts = account(properties={"plan": "Pro Team"})

    assert holds(prop("eq", "Pro Team"), facts)
    assert not holds(prop("eq", "pro team"), facts)
    assert holds(prop("contains", "o T"), facts)
    assert not holds(prop("contains", "team"), facts)
    assert holds(prop("starts_with", "Pro"), facts)
    assert not holds(prop("starts_with", "Team"), facts)


def test_contains_on_a_list_is_element_membership_not_substring() -> None:
    facts = account(properties={"plan": ["Admin", "Owner"]})

    assert holds(prop("contains", "Owner"), facts)
    assert not holds(prop("contains", "Own"), facts)
    assert not holds(prop("starts_with", "Admin"), facts)


def test_booleans_are_not_numbers() -> None:
    assert not holds(prop("eq", 1), account(properties={"plan": True}))
    assert not holds(prop("eq", True), account(properties={"plan": 1}))
    assert not holds(prop("gt", 0), account(properties={"plan": True}))
    assert holds(prop("eq", True), account(properties={"plan": True}))


def test_numbers_compare_as_numbers_whatever_their_json_spelling() -> None:
    assert holds(prop("eq", 1.0), account(properties={"plan": 1}))
    assert holds(prop("in", [2, 3.5]), account(properties={"plan": 3.5}))
    assert holds(prop("gte", 0.75), account(properties={"plan": 0.75}))
    assert not holds(prop("gt", 0.75), account(properties={"plan": 0.75}))


def test_a_number_beyond_1e300_counts_as_missing() -> None:
    assert holds(prop("not_exists"), account(properties={"plan": 10**305}))
    assert not holds(prop("gt", 0), account(properties={"plan": 10**305}))


def test_datetime_texts_compare_as_instants_whatever_their_offset() -> None:
    facts = account(properties={"plan": "2025-06-10T10:00:00+05:30"})  # 04:30 UTC

    assert holds(prop("gt", "2025-06-10T04:00:00Z"), facts)
    assert not holds(prop("gt", "2025-06-10T05:00:00Z"), facts)
    assert holds(prop("lt", "2025-06-11"), facts)  # a date alone is midnight UTC


@pytest.mark.parametrize(
    "text",
    ["2025-06-10", "2025-06-10T10:00:00+15:00", "2025-02-30T10:00:00Z", "10/06/2025 10:00", "2025-06-10T24:00:00Z"],
)
def test_texts_not_shaped_like_a_datetime_are_not_dates(text: str) -> None:
    facts = account(properties={"plan": text})

    assert not holds(prop("lt", "2030-01-01"), facts)
    assert not holds(prop("within_last_days", 36500), facts)
    assert holds(prop("eq", text), facts)


def test_a_fraction_beyond_microseconds_is_cut_not_rounded() -> None:
    facts = account(properties={"plan": "2025-06-10T10:00:00.0000009Z"})

    assert not holds(prop("gt", "2025-06-10T10:00:00Z"), facts)
    assert holds(prop("gte", "2025-06-10T10:00:00Z"), facts)


def test_builtin_texts_are_never_dates() -> None:
    facts = account(builtins={"stage": "2025-06-15T11:00:00Z"})

    assert not holds({"field": "account.stage", "op": "within_last_days", "value": 1}, facts)
    assert holds({"field": "account.stage", "op": "starts_with", "value": "2025"}, facts)


def test_an_empty_builtin_text_is_missing() -> None:
    facts = account(builtins={"name": ""})

    assert holds({"field": "account.name", "op": "not_exists"}, facts)
    assert not holds({"field": "account.name", "op": "eq", "value": ""}, facts)


def test_datetime_builtins_are_not_compared_with_eq() -> None:
    facts = account(builtins={"created_at": NOW})

    assert not holds({"field": "account.created_at", "op": "eq", "value": NOW.isoformat()}, facts)
    assert not holds({"field": "account.created_at", "op": "neq", "value": NOW.isoformat()}, facts)


@pytest.mark.parametrize(
    ("moment", "within_7", "more_than_7"),
    [
        (NOW, True, False),
        (NOW - timedelta(days=7), True, False),
        (NOW - timedelta(days=7, microseconds=1), False, True),
        (NOW + timedelta(microseconds=1), False, False),  # the future is not "in the last days"
    ],
)
def test_relative_dates_include_both_ends_of_the_window(moment: datetime, within_7: bool, more_than_7: bool) -> None:
    facts = account(builtins={"created_at": moment})

    assert holds({"field": "account.created_at", "op": "within_last_days", "value": 7}, facts) is within_7
    assert holds({"field": "account.created_at", "op": "more_than_days_ago", "value": 7}, facts) is more_than_7


def event(days: int, op: str, value: float, of: str = "account") -> dict[str, Any]:
    return {"event": "login", "of": of, "within_days": days, "op": op, "value": value}


def test_event_windows_count_utc_days_including_today_and_never_the_future() -> None:
    counts = {TODAY: 1, TODAY - timedelta(days=1): 10, TODAY - timedelta(days=7): 100, TODAY + timedelta(days=1): 1000}
    facts = account(events={"login": counts})

    assert holds(event(1, "eq", 1), facts)
    assert holds(event(2, "eq", 11), facts)
    assert holds(event(7, "eq", 11), facts)
    assert holds(event(8, "eq", 111), facts)


def test_a_missing_event_count_is_zero() -> None:
    assert holds(event(30, "eq", 0), account())
    assert not holds(event(30, "gt", 0), account(events={"login": {TODAY - timedelta(days=30): 5}}))


def test_a_membership_reads_its_account_its_user_and_itself() -> None:
    facts = c.Facts(
        account=c.EntityFacts(builtins={"stage": "Trial"}),
        user=c.EntityFacts(scores={"health": 0.8}),
        membership=c.EntityFacts(properties={"role": "Owner"}, events={"login": {TODAY: 3}}),
    )
    raw = {"all": [
        {"field": "account.stage", "op": "eq", "value": "Trial"},
        {"field": "user.score.health", "op": "gt", "value": 0.5},
        {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]},
        event(1, "gte", 3, of="membership"),
    ]}  # fmt: skip

    assert holds(raw, facts)


def test_facts_without_the_entity_a_condition_reads_are_an_error() -> None:
    with pytest.raises(ValueError, match="reads user data"):
        holds({"field": "user.email", "op": "exists"}, account())


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        holds({"all": []}, account(), now=datetime(2025, 6, 15))  # noqa: DTZ001


# --- parsing -------------------------------------------------------------------------------------------------


def parse_errors(raw: Any) -> dict[str, str]:
    with pytest.raises(c.ConditionInvalid) as caught:
        c.parse(raw)
    return caught.value.errors


def test_parse_errors_name_the_path_of_each_mistake() -> None:
    raw = {"all": [
        {"field": "account.stage", "op": "eq", "value": "Trial"},
        {"any": [{"field": "account.stage", "op": "gt"}, {"field": "account.stage", "op": "greater", "value": 1}]},
        {"not": {"event": "login", "of": "team", "within_days": 0, "op": "in", "value": "many"}},
    ]}  # fmt: skip

    errors = parse_errors(raw)

    assert set(errors) == {
        "all.1.any.0.value", "all.1.any.1.op", "all.2.not.of", "all.2.not.within_days", "all.2.not.op",
        "all.2.not.value",
    }  # fmt: skip
    assert errors["all.1.any.0.value"] == "gt needs a value"
    assert "did you mean gt?" in errors["all.1.any.1.op"]


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ("account.stage", "", "is a condition"),
        ({"all": {}}, "all", "list of conditions"),
        ({"all": [], "any": []}, "", "stands alone"),
        ({"field": "account.plan", "op": "exists"}, "field", "account.properties.<key>"),
        ({"field": "account.score.health", "op": "exists"}, "field", "account scores are conversion, churn"),
        ({"field": "team.size", "op": "exists"}, "field", "start with account., user. or membership."),
        ({"field": "account.stage", "op": "exists", "value": "x"}, "value", "takes no value"),
        ({"field": "account.stage", "op": "in", "value": []}, "value", "non-empty list"),
        ({"field": "account.stage", "op": "in", "value": ["a", 1]}, "value", "one kind"),
        ({"field": "account.stage", "op": "gt", "value": "soon"}, "value", "ISO date"),
        ({"field": "account.created_at", "op": "within_last_days", "value": -1}, "value", "number of days"),
        ({"field": "account.stage", "op": "eq", "value": [1]}, "value", "a text, a number, true or false"),
        ({"field": "account.stage", "op": "eq", "value": "x", "note": 1}, "", "unknown keys: note"),
        ({"event": "login", "of": "account", "within_days": 366, "op": "gt", "value": 1}, "within_days", "1 to 365"),
    ],
)
def test_parse_reports_what_is_wrong(raw: Any, path: str, fragment: str) -> None:
    errors = parse_errors(raw)

    assert path in errors, errors
    assert fragment in errors[path]


def test_nesting_is_limited() -> None:
    raw: Any = {"field": "account.stage", "op": "exists"}
    for _ in range(c.MAX_DEPTH + 1):
        raw = {"not": raw}

    assert list(parse_errors(raw).values()) == [f"nests more than {c.MAX_DEPTH} levels deep"]


def test_a_parsed_condition_turns_back_into_the_same_json() -> None:
    raw = {"all": [
        {"field": "account.stage", "op": "in", "value": ["Trial", "Pro"]},
        {"any": [{"field": "membership.role", "op": "exists"}, {"not": {"field": "user.email", "op": "not_exists"}}]},
        {"event": "login", "of": "membership", "within_days": 7, "op": "gte", "value": 2},
    ]}  # fmt: skip

    assert c.to_json(c.parse(raw)) == raw


# --- what a condition reads ----------------------------------------------------------------------------------

DESIGN_EXAMPLE = {"all": [
    {"field": "account.stage", "op": "eq", "value": "Trial"},
    {"field": "account.score.conversion", "op": "gt", "value": 0.75},
    {"any": [{"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
    {"event": "widget_created", "of": "account", "within_days": 30, "op": "gte", "value": 5},
    {"not": {"field": "user.properties.email_opt_out", "op": "eq", "value": True}},
]}  # fmt: skip


def test_fields_read_lists_every_field_and_event_once() -> None:
    assert c.fields_read(c.parse(DESIGN_EXAMPLE)) == {
        "account.stage", "account.score.conversion", "membership.role", "event:account.widget_created",
        "user.properties.email_opt_out",
    }  # fmt: skip


def test_only_relative_dates_and_event_windows_make_a_condition_change_with_time() -> None:
    assert c.reads_time(c.parse(DESIGN_EXAMPLE))
    assert not c.reads_time(c.parse({"field": "account.created_at", "op": "gt", "value": "2025-01-01"}))
    assert c.reads_time(c.parse({"field": "account.created_at", "op": "within_last_days", "value": 3}))


def test_events_read_names_the_events_that_alone_can_move_a_condition() -> None:
    counts = {"any": [{"event": "widget_created", "of": "account", "within_days": 30, "op": "gte", "value": 5},
                      {"not": {"event": "signed_in", "of": "membership", "within_days": 7, "op": "eq", "value": 0}},
                      {"field": "account.properties.plan", "op": "eq", "value": "pro"}]}  # fmt: skip
    assert c.events_read(c.parse(counts)) == {"widget_created", "signed_in"}
    assert c.events_read(c.parse({"field": "account.stage", "op": "eq", "value": "Trial"})) == frozenset()
    # Every event re-scores (scores, activation) and widens seen times: any event can move these.
    assert c.events_read(c.parse(DESIGN_EXAMPLE)) is None
    for moved in ("account.activation", "user.last_seen_at", "user.first_seen_at", "membership.score.champion"):
        assert c.events_read(c.parse({"all": [counts, {"field": moved, "op": "exists"}]})) is None, moved


# --- the validator -------------------------------------------------------------------------------------------

CATALOGUE = Catalogue(
    properties={
        "account": {"plan": "text", "seats": "number", "trial_end": "datetime", "tags": "list", "is_paying": "boolean"},
        "user": {"email_opt_out": "boolean", "title": "text"},
        "membership": {"role": "text"},
    },
    events=frozenset({"widget_created", "login"}),
)


def errors(raw: Any, scope: str = "account") -> dict[str, str]:
    return condition_errors(raw, CATALOGUE, scope=scope)


def test_a_well_formed_condition_that_fits_the_catalogue_has_no_errors() -> None:
    entry = {"all": [
        {"field": "account.stage", "op": "eq", "value": "Trial"},
        {"field": "account.score.conversion", "op": "gt", "value": 0.75},
        {"field": "account.properties.trial_end", "op": "within_last_days", "value": 3},
        {"event": "widget_created", "of": "account", "within_days": 30, "op": "gte", "value": 5},
    ]}  # fmt: skip
    users_where = {"all": [
        {"field": "user.score.health", "op": "gt", "value": 0.5},
        {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]},
        {"not": {"field": "user.properties.email_opt_out", "op": "eq", "value": True}},
        {"event": "login", "of": "membership", "within_days": 7, "op": "gte", "value": 1},
    ]}  # fmt: skip

    assert errors(entry) == {}
    assert errors(users_where, "users_where") == {}


def test_an_unknown_property_suggests_close_matches() -> None:
    assert errors({"field": "account.properties.plna", "op": "exists"}) == {
        "field": "no account property named 'plna' has been received yet; did you mean account.properties.plan?"
    }


def test_a_property_written_without_properties_points_to_the_right_field() -> None:
    assert errors({"field": "account.plan", "op": "exists"}) == {
        "field": "account.plan is not a field; did you mean account.properties.plan?"
    }


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        ({"field": "account.properties.plan", "op": "gt", "value": 3},
         "gt needs a number or a date; account.properties.plan is text"),
        ({"field": "account.properties.tags", "op": "eq", "value": "vip"},
         "eq needs a text, a number or true/false; account.properties.tags is a list"),
        ({"field": "account.created_at", "op": "eq", "value": "2025-01-01"},
         "eq needs a text, a number or true/false; account.created_at is a date"),
        ({"field": "account.properties.is_paying", "op": "contains", "value": "t"},
         "contains needs a text or a list; account.properties.is_paying is true/false"),
    ],
)  # fmt: skip
def test_an_operator_that_does_not_fit_the_type_is_an_error_on_op(leaf: dict[str, Any], message: str) -> None:
    assert errors({"all": [leaf]}) == {"all.0.op": message}


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        ({"field": "account.stage", "op": "eq", "value": 3}, 'account.stage is text: give a text, e.g. "Trial"'),
        ({"field": "account.properties.plan", "op": "in", "value": [1, 2]},
         'account.properties.plan is text: give a list of texts, e.g. ["Admin", "Owner"]'),
        ({"field": "account.properties.seats", "op": "gte", "value": "2025-01-01"},
         "account.properties.seats is a number: give a number, e.g. 0.75"),
        ({"field": "account.properties.trial_end", "op": "lt", "value": 5},
         'account.properties.trial_end is a date: give an ISO date, e.g. "2025-01-31" or "2025-01-31T09:00:00Z"'),
        ({"field": "account.properties.is_paying", "op": "eq", "value": "true"},
         "account.properties.is_paying is true/false: give true or false"),
        ({"field": "account.score.conversion", "op": "gt", "value": 75},
         "account.score.conversion is between 0 and 1 (0.75 means 75%)"),
    ],
)  # fmt: skip
def test_a_literal_of_the_wrong_type_is_an_error_on_value(leaf: dict[str, Any], message: str) -> None:
    assert errors({"any": [leaf]}) == {"any.0.value": message}


@pytest.mark.parametrize(
    ("raw", "scope", "path", "fragment"),
    [
        ({"field": "user.properties.title", "op": "exists"}, "account", "field", "an account condition reads"),
        ({"field": "account.stage", "op": "exists"}, "users_where", "field", "users_where reads"),
        ({"field": "membership.role", "op": "exists"}, "user", "field", "a user condition reads"),
        ({"event": "login", "of": "user", "within_days": 7, "op": "gt", "value": 1}, "account", "of", "cannot be used"),
    ],
)
def test_fields_and_events_outside_the_scope_are_errors(raw: Any, scope: str, path: str, fragment: str) -> None:
    found = errors(raw, scope)

    assert list(found) == [path]
    assert fragment in found[path]


def test_an_unknown_event_suggests_close_matches() -> None:
    raw = {"event": "widget_create", "of": "account", "within_days": 7, "op": "gt", "value": 1}

    assert errors(raw) == {
        "event": "no event named 'widget_create' has been received yet; did you mean widget_created?"
    }


def test_structural_and_catalogue_errors_come_back_together() -> None:
    raw = {"all": [{"field": "account.properties.plan", "op": "gt", "value": 1}, {"field": "account.stage"}]}

    assert set(errors(raw)) == {"all.0.op", "all.1.op"}


# --- selectors: the catalogue and the facts loader -----------------------------------------------------------


def test_the_catalogue_holds_the_tenants_properties_and_events_only(
    tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    PropertyDefinition.objects.for_tenant(tenant_a.tenant).create(entity_type="account", key="plan", type="text")
    PropertyDefinition.objects.for_tenant(tenant_b.tenant).create(entity_type="account", key="secret", type="text")
    EventName.objects.for_tenant(tenant_a.tenant).create(name="login", first_day=TODAY)
    EventName.objects.for_tenant(tenant_b.tenant).create(name="b_only", first_day=TODAY)

    catalogue = catalogue_get(tenant=tenant_a.tenant)

    assert catalogue.properties["account"] == {"plan": "text"}
    assert catalogue.events == {"login"}


def _membership_world(world: TenantWorld, n: int) -> list[int]:
    tenant = world.tenant
    accounts = Account.objects.for_tenant(tenant).bulk_create(
        Account(external_id=f"a{i}", stage="Trial", properties={"plan": "Pro"}) for i in range(n)
    )
    users = EndUser.objects.for_tenant(tenant).bulk_create(EndUser(external_id=f"u{i}") for i in range(n))
    memberships = Membership.objects.for_tenant(tenant).bulk_create(
        Membership(account=a, end_user=u, properties={"role": "Owner"}, joined_at=NOW, state_changed_at=NOW)
        for a, u in zip(accounts, users, strict=True)
    )
    Score.objects.for_tenant(tenant).bulk_create(
        Score(kind="conversion", entity_type="account", entity_id=a.pk, value=0.9, percentile=90, grade=5,
              computed_at=NOW, details={"activation": 0.6})
        for a in accounts
    )  # fmt: skip
    DailyRollup.objects.for_tenant(tenant).bulk_create(
        DailyRollup(account_id=m.account_id, end_user_id=m.end_user_id, name="login", day=TODAY, count=2)
        for m in memberships
    )
    return [m.pk for m in memberships]


@pytest.mark.parametrize("n", [1, 6])
def test_facts_load_in_a_fixed_number_of_queries(tenant_a: TenantWorld, django_assert_num_queries: Any, n: int) -> None:
    ids = _membership_world(tenant_a, n)
    condition = c.parse(event(7, "gte", 1, of="membership"))

    # memberships; their accounts and account scores; users and user scores; membership scores; pair rollups
    # (the condition reads no account-level or user-level events, so those rollups are not read)
    with django_assert_num_queries(7):
        facts = facts_for(tenant=tenant_a.tenant, root="membership", ids=ids, now=NOW, condition=condition)

    first = facts[ids[0]]
    assert first.account is not None
    assert first.account.builtins["activation"] == 0.6
    assert first.account.properties == {"plan": "Pro"}
    assert first.membership is not None
    assert first.membership.events == {"login": {TODAY: 2}}


def test_facts_of_another_tenants_ids_are_not_loaded(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    theirs = _membership_world(tenant_b, 2)
    their_accounts = list(Account.objects.for_tenant(tenant_b.tenant).values_list("pk", flat=True))

    assert facts_for(tenant=tenant_a.tenant, root="membership", ids=theirs, now=NOW) == {}
    assert facts_for(tenant=tenant_a.tenant, root="account", ids=their_accounts, now=NOW) == {}


def test_activation_falls_back_from_the_conversion_score_to_the_churn_score(tenant_a: TenantWorld) -> None:
    tenant = tenant_a.tenant
    first, second = Account.objects.for_tenant(tenant).bulk_create([Account(external_id="x"), Account(external_id="y")])
    rows = [(first, "conversion", {"activation": "high"}), (first, "churn", {"activation": 0.4}),
            (second, "conversion", {})]  # fmt: skip
    Score.objects.for_tenant(tenant).bulk_create(
        Score(kind=kind, entity_type="account", entity_id=a.pk, value=0.5, percentile=50, grade=3, computed_at=NOW,
              details=details)
        for a, kind, details in rows
    )  # fmt: skip

    facts = facts_for(tenant=tenant, root="account", ids=[first.pk, second.pk], now=NOW)

    assert facts[first.pk].of("account").builtins["activation"] == 0.4
    assert facts[second.pk].of("account").builtins["activation"] is None
