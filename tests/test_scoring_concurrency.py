"""A whole tenant's rescoring works on several connections at once: its loading queries run side by side, and
the kinds are computed side by side, each kind's scores written a chunk at a time while the reasons of its next
chunk are computed. Outside a transaction of the caller's only (other connections could not see its rows); the
results must be those of the same work on one connection, and a kind whose computing fails midway stores none of
its scores."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db import connection, transaction

from plgapp import rls
from plgapp.models import Tenant
from plgapp.services import tenant_create
from scoring import services
from scoring.generator import generate
from scoring.models import Score, ScoreHistory, ScoreKind
from scoring.services import scores_refresh_kinds, scoring_history
from signals import features as feature_loading
from signals.processing import dirty_entities_process

T = datetime(2026, 5, 20, 10, 30, tzinfo=UTC)


def _generated() -> Tenant:
    tenant = tenant_create(name="Threads", slug="threads")
    generate(tenant, accounts=10, seed=3, days=40, end=T - timedelta(hours=5), now=T)
    dirty_entities_process(tenant_id=tenant.pk)
    return tenant


def connections() -> int:
    with connection.cursor() as cursor:
        # Client connections only: an autovacuum or parallel worker may come and go on its own.
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def connections_settled(before: int, seconds: float = 5.0) -> int:
    """The client connections once they are no more than `before`, or after `seconds`: a closed connection's backend
    leaves pg_stat_activity a moment after its client closed it, longer on a busy machine; a leaked one stays. (No
    fewer is fine: `before` may count a backend of an earlier test still on its way out.)"""
    deadline = time.monotonic() + seconds
    while (count := connections()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def _same(one: Any, other: Any, path: str = "history") -> None:
    """Two loaded histories (or parts of them) hold the same data, array by array."""
    if dataclasses.is_dataclass(one):
        assert type(one) is type(other), path
        for item in dataclasses.fields(one):
            if item.name != "name_totals":  # a function of the tenant, not loaded data
                _same(getattr(one, item.name), getattr(other, item.name), f"{path}.{item.name}")
    elif isinstance(one, dict):
        assert one.keys() == other.keys(), path
        for key in one:
            _same(one[key], other[key], f"{path}[{key!r}]")
    elif isinstance(one, tuple | list) and any(isinstance(part, np.ndarray) for part in one):
        assert len(one) == len(other), path
        for n, (mine, theirs) in enumerate(zip(one, other, strict=True)):
            _same(mine, theirs, f"{path}[{n}]")
    elif isinstance(one, np.ndarray):
        assert one.dtype == other.dtype, path
        same = one.tolist() == other.tolist() if one.dtype == object else np.array_equal(one, other, equal_nan=True)
        assert same, path
    else:
        assert one == other, path


@pytest.mark.django_db(transaction=True)
def test_a_whole_tenant_loads_the_same_on_several_connections_as_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a transaction a whole tenant's queries run on connections of their own threads, in the caller's
    tenant context (row-level security would show another context nothing), each closed when done."""
    tenant = _generated()
    ran_with: list[int] = []
    run_queries = feature_loading._run_queries

    def counted(tenant: Tenant, queries: Any, threads: int) -> Any:
        ran_with.append(threads)
        return run_queries(tenant, queries, threads)

    monkeypatch.setattr(feature_loading, "_run_queries", counted)

    now, before = T, connections()
    with rls.tenant(tenant.pk):
        for kinds in ([ScoreKind.CONVERSION, ScoreKind.CHURN], list(ScoreKind)):
            threaded = scoring_history(tenant=tenant, kinds=kinds, now=now)
            with transaction.atomic():
                single = scoring_history(tenant=tenant, kinds=kinds, now=now)
            _same(threaded, single)
            assert len(threaded.memberships) > 0
            assert len(threaded.account_rollups.count) > 0
    assert ran_with == [feature_loading.LOAD_THREADS, 1] * 2
    assert connections_settled(before) <= before


def _scores(tenant: Tenant) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {
        (kind, entity_id): tuple(rest)
        for kind, entity_id, *rest in Score.objects.for_tenant(tenant).values_list(
            "kind", "entity_id", "value", "percentile", "grade", "reasons", "rule_based", "details", "computed_at"
        )
    }


@pytest.mark.django_db(transaction=True)
def test_kinds_written_while_the_next_is_computed_store_what_one_transaction_stores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Champions read the stored health scores: they must wait for that write, or they would differ."""
    tenant = _generated()
    kinds = [ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION]
    on_own = services._on_own_connection
    overlapped_writes: list[int] = []

    def counted(work: Any) -> int:
        overlapped_writes.append(1)
        return on_own(work)

    monkeypatch.setattr(services, "_on_own_connection", counted)
    before = connections()
    with rls.tenant(tenant.pk):
        history = scoring_history(tenant=tenant, kinds=kinds, now=T)
        with transaction.atomic():
            written_in_one = scores_refresh_kinds(tenant=tenant, kinds=kinds, now=T, history=history)
            in_one, history_in_one = _scores(tenant), _history(tenant, at=T)  # not the processor's
        assert overlapped_writes == []
        Score.objects.for_tenant(tenant).delete()
        ScoreHistory.objects.for_tenant(tenant).delete()

        monkeypatch.setattr(services, "WRITE_BATCH", 4)  # many chunks per kind
        written = scores_refresh_kinds(tenant=tenant, kinds=kinds, now=T, history=history)

        # each kind's write, and for each kind but champions its computing and its stored scores, read meanwhile
        assert overlapped_writes == [1] * (3 * len(kinds) - 2)
        assert written == written_in_one
        assert {ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHAMPION} <= {kind for kind, _id in in_one}
        assert _scores(tenant) == in_one
        assert _history(tenant) == history_in_one
    assert connections_settled(before) <= before


def _history(tenant: Tenant, at: datetime | None = None) -> list[tuple[Any, ...]]:
    rows = ScoreHistory.objects.for_tenant(tenant)
    rows = rows if at is None else rows.filter(computed_at=at)
    return sorted(rows.values_list("kind", "entity_type", "entity_id", "value", "grade", "model_version",
                                   "computed_at"))  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_kind_whose_reasons_fail_midway_keeps_its_stored_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer stores chunks as they come, in one transaction: when computing a later chunk fails, it rolls
    back instead of waiting for it, and the error reaches the caller once the other kinds, computed beside it, are
    stored."""
    tenant = _generated()
    kinds = [ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHURN]
    later = T + timedelta(days=1)
    before = connections()
    with rls.tenant(tenant.pk):
        scores_refresh_kinds(tenant=tenant, kinds=kinds, now=T, history=scoring_history(tenant=tenant, kinds=kinds,
                                                                                        now=T))  # fmt: skip
        stored, history_rows = _scores(tenant), _history(tenant)
        assert sum(kind == ScoreKind.CONVERSION for kind, _id in stored) >= 3  # three chunks of one
        monkeypatch.setattr(services, "WRITE_BATCH", 1)
        compute = services._compute

        def failing_midway(tenant: Tenant, kind: str, *args: Any) -> services.Computed:
            computed = compute(tenant, kind, *args)
            if kind == ScoreKind.CONVERSION:
                reasons = computed.reasons

                def third_fails(start: int, stop: int) -> Any:
                    if start == 2:
                        raise RuntimeError("a bug in the third chunk")
                    return reasons(start, stop)

                computed.reasons = third_fails
            return computed

        monkeypatch.setattr(services, "_compute", failing_midway)
        with pytest.raises(RuntimeError, match="third chunk"):
            scores_refresh_kinds(tenant=tenant, kinds=kinds, now=later,
                                 history=scoring_history(tenant=tenant, kinds=kinds, now=later))  # fmt: skip

        now_stored = _scores(tenant)
        others = {key: value for key, value in now_stored.items() if key[0] in (ScoreKind.HEALTH, ScoreKind.CHURN)}
        assert any(kind == ScoreKind.HEALTH for kind, _pk in others)
        assert {value[-1] for value in others.values()} == {later}  # stored, though conversion failed beside them
        assert {key: value for key, value in now_stored.items() if key[0] == ScoreKind.CONVERSION} == {
            key: value for key, value in stored.items() if key[0] == ScoreKind.CONVERSION
        }
        assert [row for row in _history(tenant) if row[0] == ScoreKind.CONVERSION] == [
            row for row in history_rows if row[0] == ScoreKind.CONVERSION
        ]
    assert connections_settled(before) <= before
