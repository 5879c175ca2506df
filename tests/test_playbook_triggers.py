"""Which playbooks a processing round re-checks (ADR 0019): only those whose conditions can move with what
changed. Traffic goes through the journy.io door, processing is the real `dirty_entities_process` with every
installed processor (rollups, scores, playbooks); what the playbook processor hands over is read from the
evaluations it queues after commit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import Account, DirtyEntity, EndUser, EntityType
from playbooks import services as playbook_services
from playbooks.services import playbook_create, playbook_transition
from scoring.models import Score
from signals.processing import dirty_entities_process
from tests.conftest import TenantWorld, pk_of
from tests.test_ingest_journy import Journy
from tests.test_playbook_engine import T0

pytestmark = pytest.mark.django_db

ALL_DAY = "2026-03-10T10:00:00Z"


def _activate(world: TenantWorld, name: str, entry: dict[str, Any], obj: str = "account") -> int:
    definition = {"object": obj, "entry": entry, "reentry": "never",
                  "actions": [{"id": "log", "type": "log", "params": {"message": name}}]}  # fmt: skip
    playbook = playbook_create(tenant=world.tenant, name=name, definition=definition, created_by=None, now=T0)
    playbook_transition(tenant=world.tenant, playbook_id=playbook.pk, action="activate", now=T0)
    return playbook.pk


@pytest.fixture
def playbooks(tenant_a: TenantWorld, journy: Journy) -> dict[str, int]:
    """Account playbooks reading: report events and a property; a score; a property only. A user playbook
    reading the last-seen time (every event moves it). Created after the `journy` traffic is processed."""
    team = {"field": "account.properties.team", "op": "eq", "value": 1}
    reports = {"all": [team, {"event": "report_created", "of": "account", "within_days": 7, "op": "gte", "value": 1}]}
    return {
        "reports": _activate(tenant_a, "Reports", reports),
        "score": _activate(tenant_a, "Score", {"field": "account.score.conversion", "op": "gt", "value": 0.5}),
        "plan": _activate(tenant_a, "Plan", {"field": "account.properties.plan", "op": "eq", "value": "pro"}),
        "seen": _activate(
            tenant_a, "Seen", {"field": "user.last_seen_at", "op": "within_last_days", "value": 1}, obj="user"
        ),
    }


@pytest.fixture
def journy(tenant_a: TenantWorld) -> Journy:
    journy = Journy(tenant_a)
    both = {"user": {"userId": "u1"}, "account": {"accountId": "a1"}}
    assert journy.upsert_account({"accountId": "a1"}, {"team": 1}).status_code < 300
    assert journy.add_users({"accountId": "a1"}, [{"identification": {"userId": "u1"}}]).status_code < 300
    assert journy.track(both, "page_viewed", triggeredAt=ALL_DAY).status_code < 300
    # Another account makes the names and properties the playbooks read known to the catalogue.
    assert journy.upsert_account({"accountId": "a9"}, {"plan": "free"}).status_code < 300
    assert journy.track({"account": {"accountId": "a9"}}, "report_created", triggeredAt=ALL_DAY).status_code < 300
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    return journy


def evaluated(world: TenantWorld, capture: Callable[..., Any], playbooks: dict[str, int]) -> dict[str, list[int]]:
    """Process the pending marks; {playbook name: entity ids} of the evaluations queued after commit."""
    names = {pk: name for name, pk in playbooks.items()}
    with capture() as callbacks:
        dirty_entities_process(tenant_id=world.tenant.pk)
    queued: dict[str, list[int]] = {}
    for callback in callbacks:
        if isinstance(callback, functools.partial) and callback.func is playbook_services._enqueue_evaluation:
            _tenant, playbook_id, ids = callback.args
            queued[names[playbook_id]] = sorted({*queued.get(names[playbook_id], []), *ids})
    return queued


def fields_changed(world: TenantWorld, entity_type: str, pk: int) -> bool:
    marks = DirtyEntity.objects.for_tenant(world.tenant).filter(entity_type=entity_type, entity_id=pk)
    return marks.values_list("fields_changed", flat=True).get()


def test_events_no_condition_reads_re_check_only_what_any_event_moves(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    both = {"user": {"userId": "u1"}, "account": {"accountId": "a1"}}
    a1, u1 = pk_of(tenant_a, Account, "a1"), pk_of(tenant_a, EndUser, "u1")
    journy.track(both, "page_viewed", triggeredAt=ALL_DAY)

    assert not fields_changed(tenant_a, EntityType.ACCOUNT, a1)
    assert not fields_changed(tenant_a, EntityType.USER, u1)
    # The score moves with any event; so does the user's last-seen time. Reports and plan cannot.
    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {"score": [a1], "seen": [u1]}


def test_an_event_a_condition_counts_re_checks_that_playbook(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    a1 = pk_of(tenant_a, Account, "a1")
    journy.track({"account": {"accountId": "a1"}}, "report_created", triggeredAt=ALL_DAY)

    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {"reports": [a1], "score": [a1]}


def test_a_users_event_reaches_its_accounts_playbooks_that_count_it(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    """An event of the user alone (no account on it): the account playbooks that count that name, and those
    any event moves, re-check the user's accounts."""
    a1, u1 = pk_of(tenant_a, Account, "a1"), pk_of(tenant_a, EndUser, "u1")
    journy.track({"user": {"userId": "u1"}}, "report_created", triggeredAt=ALL_DAY)

    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {
        "reports": [a1], "score": [a1], "seen": [u1],
    }  # fmt: skip


def test_a_property_change_re_checks_every_playbook_of_its_family(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    a1 = pk_of(tenant_a, Account, "a1")
    journy.upsert_account({"accountId": "a1"}, {"plan": "pro"})
    journy.track({"account": {"accountId": "a1"}}, "page_viewed", triggeredAt=ALL_DAY)  # events do not hide it

    assert fields_changed(tenant_a, EntityType.ACCOUNT, a1)
    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {
        "reports": [a1], "score": [a1], "plan": [a1],
    }  # fmt: skip


def test_an_account_created_by_an_event_is_checked_by_every_playbook(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    """`not_exists`, created_at and the like can hold for a new account whatever its events are."""
    journy.track({"account": {"accountId": "a2"}}, "page_viewed", triggeredAt=ALL_DAY)
    a2 = pk_of(tenant_a, Account, "a2")

    assert fields_changed(tenant_a, EntityType.ACCOUNT, a2)
    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {
        "reports": [a2], "score": [a2], "plan": [a2],
    }  # fmt: skip


def test_a_new_email_on_a_known_user_is_a_change_of_fields(tenant_a: TenantWorld, journy: Journy) -> None:
    u1 = pk_of(tenant_a, EndUser, "u1")
    journy.track({"user": {"userId": "u1", "email": "u1@example.test"}}, "page_viewed", triggeredAt=ALL_DAY)

    assert fields_changed(tenant_a, EntityType.USER, u1)


def test_deleted_events_re_check_the_playbooks_that_counted_them(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    """Deleting a user takes its events from its accounts' counts: the account's mark is events only, and
    the names it lost are those of the deleted rollup rows."""
    a1 = pk_of(tenant_a, Account, "a1")
    both = {"user": {"userId": "u2"}, "account": {"accountId": "a1"}}
    journy.track(both, "report_created", triggeredAt=ALL_DAY)
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    assert journy.send("delete", "/users", {"identification": {"userId": "u2"}}).status_code < 300

    assert not fields_changed(tenant_a, EntityType.ACCOUNT, a1)
    assert evaluated(tenant_a, django_capture_on_commit_callbacks, playbooks) == {"reports": [a1], "score": [a1]}


def test_goals_of_enrollments_on_an_older_version_are_re_checked_by_the_events_they_read(
    tenant_a: TenantWorld, journy: Journy, playbooks: dict[str, int], django_capture_on_commit_callbacks: Any
) -> None:
    """An account enrolled on v1 (goal: an `upgraded` event) keeps v1 when v2 (goal: nothing) is published: its
    `upgraded` event must still re-check the playbook, although v2 reads no such event."""
    from playbooks.services import playbook_evaluate, playbook_publish

    journy.track({"account": {"accountId": "a9"}}, "upgraded", triggeredAt=ALL_DAY)
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)
    a1 = pk_of(tenant_a, Account, "a1")
    entry = {"field": "account.properties.team", "op": "eq", "value": 1}
    goal = {"event": "upgraded", "of": "account", "within_days": 7, "op": "gte", "value": 1}
    definition = {"object": "account", "entry": entry, "goal": goal, "timeout": {"days": 21}, "reentry": "never",
                  "actions": [{"id": "log", "type": "log", "params": {"message": "v1"}}]}  # fmt: skip
    pk = playbook_create(tenant=tenant_a.tenant, name="Upgrades", definition=definition, created_by=None, now=T0).pk
    playbook_transition(tenant=tenant_a.tenant, playbook_id=pk, action="activate", now=T0)
    playbook_evaluate(tenant=tenant_a.tenant, playbook_id=pk, now=T0)  # a1 enrolls on v1
    playbook_publish(
        tenant=tenant_a.tenant, playbook_id=pk, definition={**definition, "goal": None}, created_by=None, now=T0
    )
    journy.track({"account": {"accountId": "a1"}}, "upgraded", triggeredAt=ALL_DAY)

    assert evaluated(tenant_a, django_capture_on_commit_callbacks, {**playbooks, "upgrades": pk})["upgrades"] == [a1]


@pytest.mark.django_db(transaction=True)
def test_playbooks_reading_no_score_are_queued_before_the_rescore_and_the_others_after_it(
    tenant_a: TenantWorld, journy: Journy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round commits the rollups and queues the evaluations of the playbooks that read no score, then rescores
    in a second transaction and queues those that read a score — in a condition, or in a message (ADR 0028).
    Each evaluation is recorded as it is queued, with whether the new account's score is committed by then."""
    names = {
        _activate(tenant_a, "Reports", {"event": "report_created", "of": "account", "within_days": 7, "op": "gte",
                                        "value": 1}): "reports",
        _activate(tenant_a, "Score", {"field": "account.score.conversion", "op": "gte", "value": 0}): "score",
    }  # fmt: skip
    message = "{{ account.name }} at {{ account.score.conversion }}"
    shows_score = {"object": "account", "reentry": "never",
                   "entry": {"event": "report_created", "of": "account", "within_days": 7, "op": "gte", "value": 1},
                   "actions": [{"id": "log", "type": "log", "params": {"message": message}}]}  # fmt: skip
    shown = playbook_create(tenant=tenant_a.tenant, name="Shows", definition=shows_score, created_by=None, now=T0)
    playbook_transition(tenant=tenant_a.tenant, playbook_id=shown.pk, action="activate", now=T0)
    names[shown.pk] = "shows score"
    queued: list[tuple[str, bool]] = []

    def record(tenant_id: int, playbook_id: int, ids: list[int]) -> None:
        scores = Score.objects.for_tenant(tenant_id).filter(kind="conversion", entity_type="account", entity_id__in=ids)
        queued.append((names[playbook_id], scores.exists()))

    monkeypatch.setattr(playbook_services, "_enqueue_evaluation", record)
    assert journy.upsert_account({"accountId": "a3"}, {"stage": "Trial"}).status_code < 300  # scored for conversion
    journy.track({"account": {"accountId": "a3"}}, "report_created", triggeredAt=ALL_DAY)
    dirty_entities_process(tenant_id=tenant_a.tenant.pk)

    assert queued == [("reports", False), ("score", True), ("shows score", True)]
    assert not DirtyEntity.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.parametrize(
    ("template", "reads"),
    [
        ("{{ account.name }} ({{ account.properties.plan }}) is a PQA", False),
        ("{{ user.email }}, {{ membership.role }}", False),
        ("{{ account.score.conversion | percent }}", True),
        ("{{ account.reasons.conversion | reasons }}", True),
        ("{{ account['activation'] }}", True),
        ("{{ user.score.health }}", True),
        ("{{ account }}", True),  # the whole account, scores and all
        ("{% for key in user %}{{ key }}{% endfor %}", True),
        ("{% set a = account %}{{ a.name }}", True),
        ("{{ account[playbook.name] }}", True),  # a computed key may name a score
    ],
)
def test_a_template_reads_scores_when_it_can_show_one(template: str, reads: bool) -> None:
    from integrations.templates import template_reads_scores

    assert template_reads_scores(template) is reads


def test_actions_that_pick_users_by_a_score_or_show_one_make_the_playbook_wait_for_the_rescore() -> None:
    from playbooks.evaluation import _actions_read_scores

    def definition(**action: Any) -> dict[str, Any]:
        return {"on_timeout": [{"id": "a", "type": "hubspot.create_task", "params": {"subject": "Call"}, **action}]}

    healthy = {"field": "user.score.health", "op": "gt", "value": 0.5}
    admins = {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}
    assert _actions_read_scores(definition(target="users", users_where=healthy))
    assert not _actions_read_scores(definition(target="users", users_where=admins))
    assert _actions_read_scores(definition(params={"subject": "{{ account.name }}: {{ account.reasons.churn }}"}))
    assert not _actions_read_scores(definition(params={"subject": "{{ account.name }}", "list_id": 7}))
