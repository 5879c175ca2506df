"""Scoring's bulk paths agree with their plain definitions (the issue 4 benchmark work made them fast):

- reasons are picked for many entities at once exactly as `reasons.pick` picks them one by one;
- contributions equal predict_proba on the rows with a feature group set to its typical value (gradient boosting
  by its compiled trees or, where they cannot serve, by its own predictor; logistic regression; their blend);
- a few changed entities are rescored from their own data only: the same features as a whole-tenant load,
  the same scores as a full rescore;
- the score write keeps ScoreHistory's rules (a row when a score is new, or has moved from its latest row or
  changed grade; a new day alone records none) and drops the scores of entities no longer scored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from accounts.models import Account, EndUser, Membership, StageChange
from plgapp.models import Tenant
from plgapp.services import tenant_create
from scoring import learn
from scoring.datasets import features
from scoring.generator import generate
from scoring.learn import Blend, Trained, calibrated_from_decision, feature_groups, percentiles
from scoring.models import Score, ScoreHistory, ScoreKind
from scoring.reasons import pick, render
from scoring.services import (
    HISTORY_MIN_CHANGE,
    Stored,
    _round3,
    _Texts,
    copy_json,
    history_moves,
    reason_json,
    rescore_changed,
    scores_refresh,
    scores_refresh_all,
    scoring_history,
    settings_set,
    working_settings,
)
from signals.features import RawFeatures
from signals.processing import dirty_entities_process

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY_EVENTS = ["report_created", "alert_created"]


# --- reasons for many entities at once ---------------------------------------------------------------------


def test_reasons_in_bulk_are_the_json_of_what_pick_picks_one_entity_at_a_time() -> None:
    """Byte for byte: orjson's text of pick's dicts, escaped for COPY (texts with quotes, backslashes, non-ASCII)."""
    rng = np.random.default_rng(7)
    for _case in range(200):
        rows, size = int(rng.integers(0, 40)), int(rng.integers(0, 9))
        weights = rng.normal(0.0, 0.02, (rows, size))
        # ties, zeros and values on the thresholds, where the order rules show; big and tiny weights
        for value, share in ((0.0, 0.2), (0.01, 0.15), (-0.01, 0.1), (0.005, 0.05), (-0.005, 0.05), (0.0005, 0.05),
                             (-0.0004, 0.05), (1234.5675, 0.02), (1e17, 0.01)):  # fmt: skip
            weights[rng.random((rows, size)) < share] = value
        names = [f'feature "{n}" \\ é' for n in range(size)]
        first = int(rng.integers(0, 100))

        def text(row: int, slot: int) -> str:
            return f'text {row}/{slot} "quoted" \\path\tend ü'

        def fragments(absolute: np.ndarray, slot: int) -> list[str]:
            return [copy_json(text(row, slot)) for row in absolute.tolist()]

        bulk = reason_json(weights, names, fragments, first)
        assert len(bulk) == rows
        for row in range(rows):
            one = pick([(names[slot], float(weights[row, slot]), text(first + row, slot)) for slot in range(size)])
            assert bulk[row] == copy_json(one), (weights[row], bulk[row], one)


def test_reason_texts_are_rendered_once_per_candidate_and_value_as_render_renders_them() -> None:
    numbers = np.array([3.0, np.nan, 3.0, -0.0, 0.0, 12.5, np.nan, 7.0])
    categories = ["Admin", None, "Admin", "Owner", None, "x\\y", "Owner", "Admin"]
    describes: list[dict[str, Any]] = [{"kind": "count", "event": "report_created", "window": 30},
                 {"kind": "property_text", "property": "plan"}]  # fmt: skip
    names = ["count:report_created:30", "plan"]
    texts = _Texts(names, [numbers, categories], describes, [4.0, None], "converted trials")
    rows = np.array([7, 0, 1, 6, 3, 4, 5, 2])
    assert texts(rows, 0) == [
        copy_json(render("count:report_created:30", float(numbers[row]), describes[0], median=4.0,
                         peers="converted trials"))
        for row in rows.tolist()
    ]  # fmt: skip
    assert texts(rows, 1) == [
        copy_json(render("plan", 0.0, {**describes[1], "value": categories[row] or "unknown"}, median=None,
                         peers="converted trials"))
        for row in rows.tolist()
    ]  # fmt: skip
    assert len(texts.cache[0]) == 5  # 3, 7, 12.5, zero (either sign) and unknown (every NaN)


def test_weights_are_rounded_as_python_rounds_them_also_next_to_ties() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.normal(0.0, 1.0, 50_000) * rng.choice([1e-3, 1.0, 100.0], 50_000),
        np.arange(-2000, 2000) / 2000,  # exact halves of the third decimal
        np.arange(-2000, 2000) / 1000 + 0.0005,  # near-ties that binary floats put on either side
    ])  # fmt: skip
    assert _round3(values.reshape(1, -1))[0] == [round(value, 3) for value in values.tolist()]


# --- contributions ----------------------------------------------------------------------------------------------


def _trained(base: Any, x: np.ndarray, columns: list[str]) -> Trained:
    groups, names = feature_groups(columns)
    reference = np.nanmedian(x, axis=0)
    reference[[columns.index(f"plan={plan}") for plan in ("a", "b", "c")]] = [1.0, 0.0, 0.0]
    importances = {name: float(n) for n, name in enumerate(names)}
    return Trained(algorithm="test", model=base, base=base, columns=columns, groups=groups, group_names=names,
                   reference=reference, positive_medians={}, importances=importances)  # fmt: skip


def _by_definition(trained: Trained, x: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Every row predicted again with each group at its typical value (what contributions means)."""
    ranked, _fast = trained.contributions(x[:1])
    base = trained.base.predict_proba(x)[:, 1]
    shifted = np.zeros((len(x), len(ranked)))
    for slot, group in enumerate(ranked):
        moved = x.copy()
        moved[:, trained.groups[group]] = trained.reference[trained.groups[group]]
        shifted[:, slot] = trained.base.predict_proba(moved)[:, 1]
    return ranked, base[:, None] - shifted


def _data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(11)
    rows = 3000
    counts = rng.poisson(rng.choice([0.0, 0.5, 4.0], (rows, 4)))  # mostly at the median for some rows
    plan = rng.choice(3, rows)
    one_hot = np.eye(3)[plan]
    ratio = rng.random(rows)
    ratio[rng.random(rows) < 0.1] = np.nan  # missing values take their own branch
    x = np.column_stack([counts, ratio, one_hot]).astype(float)
    logit = 0.6 * counts[:, 0] - 0.4 * counts[:, 1] + 1.5 * np.nan_to_num(ratio) - 0.8 * (plan == 2) - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y, ["count:a", "count:b", "count:c", "count:d", "ratio", "plan=a", "plan=b", "plan=c"]


def test_contributions_of_gradient_boosting_equal_predictions_on_the_shifted_rows_exactly() -> None:
    x, y, columns = _data()
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=8, random_state=1).fit(x, y)
    trained = _trained(model, x, columns)

    ranked, fast = trained.contributions(x)

    expected_ranked, expected = _by_definition(trained, x)
    assert ranked == expected_ranked
    assert np.array_equal(fast, expected)
    assert (fast == 0).any()  # rows already at the typical value are not moved ...
    assert (fast != 0).any()  # ... the others are


def test_contributions_of_a_logistic_regression_and_of_a_blend_equal_predictions_on_the_shifted_rows() -> None:
    x, y, columns = _data()
    linear = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression()).fit(x, y)
    boosted = HistGradientBoostingClassifier(max_iter=40, random_state=2).fit(x, y)
    for base in (linear, Blend([boosted, linear]).fit(x, y)):
        trained = _trained(base, x, columns)

        ranked, fast = trained.contributions(x)

        expected_ranked, expected = _by_definition(trained, x)
        assert ranked == expected_ranked
        np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_scores_taken_from_the_explanation_equal_the_calibrated_models_predictions_exactly(
    method: str, monkeypatch: Any
) -> None:
    x, y, columns = _data()
    boosted = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=8, random_state=3).fit(x, y)
    linear = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression()).fit(x, y)
    for base in (boosted, linear, Blend([boosted, linear]).fit(x, y)):
        calibrated = CalibratedClassifierCV(FrozenEstimator(base), method=method).fit(x[:1500], y[:1500])
        trained = _trained(base, x, columns)
        trained.model = calibrated
        if base is not linear:  # trees: the scores come from the explanation's decision values, no second pass
            monkeypatch.setattr(trained, "predict", lambda _x: pytest.fail("predicted the rows a second time"))

        values, ranked, fast = trained.scores_and_contributions(x)

        assert np.array_equal(values, calibrated.predict_proba(x)[:, 1]), type(base).__name__
        ranked_alone, alone = trained.contributions(x)
        assert ranked == ranked_alone
        assert np.array_equal(fast, alone)
        monkeypatch.undo()
    decision = boosted.decision_function(x)
    assert calibrated_from_decision(boosted, boosted, decision) is None  # not calibrated: predict it
    other = CalibratedClassifierCV(FrozenEstimator(linear)).fit(x, y)
    assert calibrated_from_decision(other, boosted, decision) is None  # a calibration of another model


def test_a_model_the_compiled_trees_cannot_serve_is_explained_by_its_own_predictions() -> None:
    x, y, columns = _data()
    wide = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=80, min_samples_leaf=5, random_state=5).fit(x, y)
    assert learn.compiled_trees(wide) is None  # more than 64 leaves in a tree
    trained = _trained(wide, x, columns)

    values, ranked, fast = trained.scores_and_contributions(x)

    assert np.array_equal(values, wide.predict_proba(x)[:, 1])
    expected_ranked, expected = _by_definition(trained, x)
    assert ranked == expected_ranked
    assert np.array_equal(fast, expected)


# --- loading only what changed, writing scores ------------------------------------------------------------------


@dataclass
class World:
    tenant: Tenant
    accounts: list[int]
    users: list[int]


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """A generated 25-account, 50-day tenant with its rollups, for the module (rolled back at its end)."""
    with django_db_blocker.unblock(), transaction.atomic():
        tenant = tenant_create(name="Bulk", slug="bulk")
        generate(tenant, accounts=25, seed=5, days=50, end=END)
        settings_set(tenant=tenant, raw={"key_events": KEY_EVENTS}, now=END)
        dirty_entities_process(tenant_id=tenant.pk)  # rollups, and the scores the processor writes: start without
        Score.objects.for_tenant(tenant).delete()
        ScoreHistory.objects.for_tenant(tenant).delete()
        yield World(
            tenant,
            sorted(Account.objects.for_tenant(tenant).values_list("pk", flat=True)),
            sorted(EndUser.objects.for_tenant(tenant).values_list("pk", flat=True)),
        )
        transaction.set_rollback(True)


def _same_table(one: RawFeatures, other: RawFeatures) -> None:
    assert np.array_equal(one.ids, other.ids)
    assert list(one.numbers) == list(other.numbers)
    for name, values in one.numbers.items():
        assert np.array_equal(values, other.numbers[name], equal_nan=True), name
    assert one.categories == other.categories
    assert one.describe == other.describe


@pytest.mark.django_db
def test_a_few_entities_loaded_alone_have_the_features_they_have_in_the_whole_tenant(world: World) -> None:
    tenant, now = world.tenant, END + timedelta(hours=3)
    settings = working_settings(tenant=tenant)
    accounts, users = world.accounts[::6], world.users[::9]
    everything = scoring_history(tenant=tenant, kinds=list(ScoreKind), now=now)

    for_accounts = scoring_history(tenant=tenant, kinds=[ScoreKind.CONVERSION, ScoreKind.CHURN], now=now,
                                   accounts=accounts)  # fmt: skip
    for_users = scoring_history(tenant=tenant, kinds=[ScoreKind.HEALTH], now=now, users=users)

    assert len(for_accounts.account_rollups.count) < len(everything.account_rollups.count)
    assert set(for_accounts.memberships.account.tolist()) <= set(accounts)
    for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN):
        _same_table(features(everything, settings, kind, now, accounts, KEY_EVENTS),
                    features(for_accounts, settings, kind, now, accounts, KEY_EVENTS))  # fmt: skip
    _same_table(features(everything, settings, ScoreKind.HEALTH, now, users, KEY_EVENTS),
                features(for_users, settings, ScoreKind.HEALTH, now, users, KEY_EVENTS))  # fmt: skip


def _scores(tenant: Tenant) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {
        (kind, entity_id): tuple(rest)
        for kind, entity_id, *rest in Score.objects.for_tenant(tenant).values_list(
            "kind", "entity_id", "value", "percentile", "grade", "reasons", "rule_based", "details", "computed_at"
        )
    }


@pytest.mark.django_db
def test_rescoring_changed_entities_from_their_own_data_writes_what_a_whole_tenant_load_writes(world: World) -> None:
    tenant, now = world.tenant, END + timedelta(hours=5)
    scores_refresh_all(tenant=tenant, now=now)  # the stored scores new ones are ranked among
    users = world.users[::4]
    changed = [("account", pk) for pk in world.accounts[::5]] + [("user", pk) for pk in users]
    later = now + timedelta(minutes=10)

    rescore_changed(tenant, changed, later)

    from_own_data = _scores(tenant)
    rescored = {key for key, value in from_own_data.items() if value[-1] == later}
    assert {kind for kind, _pk in rescored} == set(ScoreKind)
    for (kind, pk), (value, percentile, *_rest) in from_own_data.items():  # ranked among every stored score
        if (kind, pk) in rescored:
            population = np.array([row[0] for key, row in from_own_data.items() if key[0] == kind])
            assert percentile == percentiles(np.array([value]), population)[0]
    # The same rescoring from a load of the whole tenant.
    everything = scoring_history(tenant=tenant, kinds=list(ScoreKind), now=later)
    of_users = Membership.objects.for_tenant(tenant).filter(end_user_id__in=users).values_list("account_id", flat=True)
    accounts = sorted(set(world.accounts[::5]) | set(of_users))  # as rescore_changed widens them
    scores_refresh(tenant=tenant, kind=ScoreKind.HEALTH, now=later, entity_ids=users, history=everything)
    for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION):
        scores_refresh(tenant=tenant, kind=kind, now=later, entity_ids=accounts, history=everything)
    assert _scores(tenant) == from_own_data


@pytest.mark.django_db
def test_history_rows_follow_new_and_moved_scores_and_stale_scores_are_dropped(world: World) -> None:
    tenant, now = world.tenant, END + timedelta(hours=1)
    written = scores_refresh(tenant=tenant, kind=ScoreKind.CONVERSION, now=now)
    assert written > 0
    history = ScoreHistory.objects.for_tenant(tenant).filter(kind=ScoreKind.CONVERSION)
    assert history.count() == written  # every score is new
    scores = Score.objects.for_tenant(tenant).filter(kind=ScoreKind.CONVERSION)
    assert all(score.history_value == score.value and score.history_grade == score.grade for score in scores.all())

    scores_refresh(tenant=tenant, kind=ScoreKind.CONVERSION, now=now + timedelta(minutes=30))
    assert history.count() == written  # nothing moved: no row
    assert set(scores.values_list("computed_at", flat=True)) == {now + timedelta(minutes=30)}

    before = {score.entity_id: (score.value, score.grade) for score in scores.all()}
    converted = next(iter(before))
    StageChange.objects.for_tenant(tenant).create(
        entity_type="account", entity_id=converted, from_stage="Trial", to_stage="Customer",
        changed_at=now + timedelta(minutes=40),
    )  # fmt: skip
    next_day = now + timedelta(days=1)
    rescored = scores_refresh(tenant=tenant, kind=ScoreKind.CONVERSION, now=next_day)

    assert not scores.filter(entity_id=converted).exists()
    assert rescored == written - 1
    after = {score.entity_id: score for score in scores.all()}
    moved = {pk for pk, score in after.items()
             if abs(score.value - before[pk][0]) >= HISTORY_MIN_CHANGE or score.grade != before[pk][1]}  # fmt: skip
    assert moved  # (a new day alone records nothing: history_moves is not told the day)
    assert set(history.filter(computed_at=next_day).values_list("entity_id", flat=True)) == moved
    # each copied from its score as written (in the upsert's own statement); every score keeps its latest row's
    fields = ("entity_type", "entity_id", "value", "grade", "model_version", "computed_at")
    assert set(history.filter(computed_at=next_day).values_list(*fields)) == set(
        scores.filter(entity_id__in=moved).values_list(*fields)
    )
    for pk, score in after.items():
        latest = history.filter(entity_id=pk).latest("computed_at")
        assert (score.history_value, score.history_grade) == (latest.value, latest.grade)


def test_a_drift_is_recorded_once_it_adds_up_to_the_minimum_change() -> None:
    """Each rescore compares with the score's latest history row, not with the score it replaces: small moves
    add up instead of each passing unrecorded."""
    ids = np.array([1, 2, 3, 4, 5])
    stored = Stored(ids=np.array([1, 2, 3, 4]), values=np.array([0.504, 0.3, 0.7, 0.2]),
                    history_values=np.array([0.5, 0.3, 0.7, np.nan]),
                    history_grades=np.array([3, 2, 4, -1]))  # fmt: skip
    values = np.array([0.508, 0.311, 0.7, 0.2, 0.9])
    grades = np.array([3, 2, 5, 1, 5])
    moved, value, grade = history_moves(ids, values, grades, stored)
    # 1 drifted 0.008 from its row (0.004 at each rescore): not yet; 2 moved 0.011; 3 changed grade; 4 has no row
    # yet (stored before rows were recorded this way); 5 is new
    assert moved.tolist() == [False, True, True, True, True]
    assert value.tolist() == [0.5, 0.311, 0.7, 0.2, 0.9]  # 1 keeps its row's value
    assert grade.tolist() == [3, 2, 5, 1, 5]
    moved, value, _grade = history_moves(ids[:1], np.array([0.512]), grades[:1], stored)
    assert moved.tolist() == [True]  # 0.012 from its row, though 0.004 from the score it replaces
