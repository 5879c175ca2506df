"""Fast tests of scoring's pure parts: settings validation, metrics, time split, rules, reasons, attribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from scoring import config
from scoring.learn import (
    NotEnoughLabels,
    expected_calibration_error,
    grades,
    percentiles,
    ranking_metrics,
    split_by_time,
    train,
)
from scoring.reasons import pick, render
from scoring.rules import rule_scores


def test_the_defaults_are_valid_and_match_the_documented_shape() -> None:
    settings = config.validate({})

    assert settings["stages"]["paying"] == ["Customer", "Standard", "Pro", "Enterprise"]
    assert settings["models"]["health"] == {"horizon_days": 14, "activity_events": []}
    assert config.stage_group(settings, "customer") == "paying"
    assert config.stage_group(settings, "Lead") is None


def test_settings_errors_name_every_bad_field() -> None:
    with pytest.raises(config.ConfigInvalid) as caught:
        config.validate(
            {
                "stages": {"trial": ["Trial"], "paying": ["Trial"], "churned": []},
                "models": {"churn": {"horizon_days": 0}, "health": {"horizon_days": 14, "activity_events": "login"}},
                "milestones": [{"name": "x", "metric": "event", "count": 3}],
                "colour": "blue",
            }
        )

    assert caught.value.fields == {
        "colour": "is not a setting",
        "stages.paying": "'Trial' is already a trial stage",
        "stages.churned": "must name at least one",
        "models.churn.horizon_days": "must be a number from 1 to 365",
        "models.health.activity_events": "must be a list of non-empty strings",
        "milestones.0.event": "names the event to count",
    }


def test_stored_settings_are_merged_over_the_defaults_section_by_section() -> None:
    settings = config.merged({"models": {"conversion": {"horizon_days": 60}}, "key_events": ["report_created"]})

    assert settings["models"]["conversion"] == {"horizon_days": 60}
    assert settings["models"]["churn"] == {"horizon_days": 30}
    assert settings["key_events"] == ["report_created"]


def test_expected_calibration_error_is_zero_when_rates_match_predictions() -> None:
    p = np.repeat([0.1, 0.5, 0.9], 1000)
    y = np.concatenate([np.arange(1000) < 100, np.arange(1000) < 500, np.arange(1000) < 900]).astype(int)

    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=1e-9)


def test_lift_and_recall_come_from_the_top_of_the_ranking() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(1, 0, 10)

    assert ranking_metrics(y, p) == {"lift_top_decile": 5.0, "recall_top_20": 1.0}


def test_the_time_split_trains_on_old_snapshots_and_evaluates_on_the_newest() -> None:
    snapshot = np.repeat(np.arange(10), 3)

    fit, calibrate, holdout = split_by_time(snapshot)

    assert set(snapshot[fit]) == set(range(6))
    assert set(snapshot[calibrate]) == {6, 7}
    assert set(snapshot[holdout]) == {8, 9}
    with pytest.raises(NotEnoughLabels):
        split_by_time(np.array([1, 1, 2]))


def test_percentiles_and_grades() -> None:
    population = np.arange(100, dtype=float)

    ranks = percentiles(np.array([0.0, 49.0, 99.0]), population)

    assert ranks.tolist() == [1, 50, 100]
    assert grades(np.array([0, 19, 20, 59, 80, 100])).tolist() == [1, 1, 2, 3, 5, 5]


def _synthetic(n: int = 6000, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logit = 1.6 * x[:, 0] - 1.0 * x[:, 1] - 1.2
    truth = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < truth).astype(int)
    return x, y, np.repeat(np.arange(12), n // 12), truth


def test_a_trained_model_is_calibrated_close_to_the_oracle_and_beats_a_weak_rule() -> None:
    x, y, snapshot, truth = _synthetic()
    holdout = snapshot >= 10

    fitted = train(x, y, snapshot, ["good", "bad", "noise1", "noise2"], baseline=x[:, 1] * -1)

    from sklearn.metrics import roc_auc_score

    oracle = roc_auc_score(y[holdout], truth[holdout])
    assert fitted.metrics["auc"] >= oracle - 0.02
    assert fitted.metrics["ece"] <= 0.04
    assert fitted.metrics["auc"] > fitted.metrics["baseline_auc"]
    assert fitted.metrics["n_eval"] == int(holdout.sum())
    assert set(fitted.report) >= {"calibration_curve", "feature_importances", "algorithm", "calibration_method"}
    assert max(fitted.report["feature_importances"], key=fitted.report["feature_importances"].get) == "good"


def test_reasons_agree_with_the_model_moving_a_feature_to_its_typical_value_moves_the_score() -> None:
    x, y, snapshot, _truth = _synthetic()
    fitted = train(x, y, snapshot, ["good", "bad", "noise1", "noise2"], baseline=x[:, 0])
    trained = fitted.trained
    assert trained is not None
    rows = x[:200]

    groups, contributions = trained.contributions(rows)

    good = groups.index(0)
    for row, contribution in zip(rows, contributions[:, good], strict=True):
        moved = row.copy()
        moved[0] = trained.reference[0]
        before, after = trained.predict(row[None, :])[0], trained.predict(moved[None, :])[0]
        if abs(contribution) > 0.02:  # a reason worth showing: the calibrated score moves the same way
            assert np.sign(before - after) in (np.sign(contribution), 0)
        assert np.sign(contribution) == np.sign(row[0] - trained.reference[0]) or abs(contribution) < 1e-6


def test_too_few_positive_labels_refuse_to_train() -> None:
    x, _y, snapshot, _truth = _synthetic(n=1200)
    y = np.zeros(len(x), dtype=int)
    y[:3] = 1

    with pytest.raises(NotEnoughLabels, match="at least 5 positive labels"):
        train(x, y, snapshot, ["a", "b", "c", "d"], baseline=x[:, 0])


def test_rule_scores_rank_active_accounts_above_idle_ones_and_explain_why() -> None:
    numbers = {
        "activation": np.array([1.0, 0.0, 0.5]),
        "key_events_30d": np.array([50.0, 0.0, 10.0]),
        "active_seats_30d": np.array([4.0, 0.0, 1.0]),
        "days_since_last_active": np.array([1.0, 60.0, 5.0]),
    }

    scores = rule_scores("conversion", numbers, 3)

    assert scores.values[0] > scores.values[2] > scores.values[1]
    assert (scores.contributions[0] > 0).all()
    assert (scores.contributions[1] < 0).all()


def test_reason_texts_compare_with_peers() -> None:
    count = {"kind": "count", "event": "widget_created", "window": 30}

    assert render("c", 42, count, median=10.2, peers="converted trials") == (
        "widget_created: 42 in 30 days — 4.1x the median of converted trials"
    )
    assert render("c", 0, count, median=3, peers="converted trials") == (
        "no widget_created in 30 days (median of converted trials: 3)"
    )
    assert render("d", 12, {"kind": "days_since_last_active"}, median=None, peers="x") == "no activity for 12 days"
    assert render("q", 0.92, {"kind": "quota_ratio", "quota": "storage_gb"}, median=None, peers="x") == (
        "storage_gb at 92% of its limit"
    )
    assert render("t", math.log(0.4), {"kind": "trend_30d"}, median=None, peers="x") == (
        "activity down 60% on the previous 30 days"
    )


def test_pick_keeps_the_three_strongest_of_each_direction() -> None:
    candidates = [(f"f{n}", weight, f"t{n}") for n, weight in enumerate([0.3, 0.2, 0.1, 0.05, -0.4, -0.001])]

    reasons = pick(candidates)

    assert [r["feature"] for r in reasons] == ["f4", "f0", "f1", "f2"]
    assert reasons[0] == {"feature": "f4", "text": "t4", "direction": "-", "weight": -0.4}


KINDS_OF_FEATURES = [
    {"kind": "count", "event": "report_created", "window": 30}, {"kind": "days_since_last_active"},
    {"kind": "active_days_30d"}, {"kind": "events_30d"}, {"kind": "key_events", "window": 30}, {"kind": "events_7d"},
    {"kind": "events_prev_30d"}, {"kind": "trend_30d"}, {"kind": "seats"}, {"kind": "active_seats_30d"},
    {"kind": "active_seat_share"}, {"kind": "role_share", "role": "owner"}, {"kind": "activation"},
    {"kind": "milestone", "milestone": "3 teammates"}, {"kind": "age_days"},
    {"kind": "quota_ratio", "quota": "storage_gb"}, {"kind": "quota_days_left", "quota": "storage_gb"},
    {"kind": "accounts"}, {"kind": "role_weight"}, {"kind": "property_number", "property": "seats_paid"},
    {"kind": "property_boolean", "property": "sso"}, {"kind": "property_datetime", "property": "renewal_at"},
    {"kind": "property_text", "property": "plan", "value": "Pro"}, {"kind": "events_per_day"},
    {"kind": "key_event_share"}, {"kind": "signal", "signal_kind": "ratio", "label": "Storage used"},
    {"kind": "signal", "signal_kind": "event_count", "label": "Reports"}, {"kind": "something new"},
]  # fmt: skip


@pytest.mark.parametrize("describe", KINDS_OF_FEATURES)
def test_every_kind_of_feature_renders_any_value_without_failing(describe: dict[str, object]) -> None:
    for value in (math.nan, math.inf, -math.inf, 0.0, -1.0, 0.5, 1e12):
        for median in (None, math.nan, 0.0, 3.0):
            text = render("feature", value, describe, median=median, peers="converted trials")
            assert text
            assert "nan" not in text


def test_stages_of_many_accounts_at_once_are_those_found_one_by_one() -> None:
    """Strictly before the instant; of changes at the same instant, the one listed last."""
    from datetime import UTC, datetime, timedelta

    from signals.features import History, Memberships, Rollups

    def stage_as_of(entity_type: str, pk: int, at: datetime) -> str | None:  # one account, by walking its list
        stage = None
        for changed_at, to_stage in stages.get((entity_type, pk), ()):
            if changed_at >= at:
                break
            stage = to_stage
        return stage

    start = datetime(2026, 3, 1, tzinfo=UTC)
    rng = np.random.default_rng(5)
    stages: dict[tuple[str, int], list[tuple[datetime, str | None]]] = {}
    for account in range(1, 300):
        times = sorted(start + timedelta(hours=int(hours)) for hours in rng.integers(0, 200, rng.integers(0, 5)))
        stages[("account", account)] = [(at, str(rng.choice(["Trial", "Customer", "Churned"]))) for at in times]
    stages[("account", 7)] = [(start, "Trial"), (start, None), (start, "Customer")]  # one instant, in this order
    stages[("user", 8)] = [(start, "Trial")]  # another entity type: not an account's
    empty = Rollups.empty()
    history = History(1, empty, empty, empty, {}, stages, Memberships.empty(), {})
    ids = np.array([*range(0, 305), 8], dtype=np.int64)
    for at in [start, start + timedelta(microseconds=1), *(start + timedelta(hours=h) for h in (3, 50, 120, 500))]:
        found = history.stages_as_of("account", ids, at).tolist()
        assert found == [stage_as_of("account", int(pk), at) for pk in ids]


@pytest.mark.parametrize("spread", [1, 10_000_000])  # a lookup table, then a search (ids too far apart)
def test_entity_slots_finds_each_entity_in_ids_and_minus_one_for_the_rest(spread: int) -> None:
    from signals.features import entity_slots

    ids = np.array([50, 7, 20, 8], dtype=np.int64) * spread
    entities = np.array([7, 0, 50, 51, 20, 8, 49, -3, 10**9, 7], dtype=np.int64) * spread
    expected = [ids.tolist().index(e) if e in ids.tolist() else -1 for e in entities.tolist()]

    assert entity_slots(entities, ids).tolist() == expected
    assert entity_slots(entities[:0], ids).tolist() == []
    assert entity_slots(entities, ids[:0]).tolist() == [-1] * len(entities)


@pytest.mark.parametrize("kind", ["present", "number", "strict_number", "boolean", "text", "role", "epoch", "value"])
def test_gathering_a_few_rows_converts_them_alone_with_the_same_values_as_the_whole_column(kind: str) -> None:
    """Scoring gathers each entity's latest row of a long history: those rows are converted alone (the whole
    column only once gathering has converted as many rows as it holds), and give exactly the column's values."""
    from signals.features import KeyChanges

    samples = [None, 3, 2.5, True, False, "text", "2026-03-01T10:00:00Z", "2026-03-01", ["a"], float("nan"), 0]
    values = np.empty(len(samples) * 3, dtype=object)
    values[:] = samples * 3
    n = len(values)
    changes = KeyChanges(entity=np.arange(n), at=np.zeros(n, dtype=np.int64), values=values)
    whole = KeyChanges(entity=np.arange(n), at=np.zeros(n, dtype=np.int64), values=values)
    every = np.arange(-1, n)
    expected = whole.gather(every, kind)  # n + 1 rows: converted as a whole column
    assert kind == "value" or kind in whole._columns

    for rows in (np.array([4, -1, 0, 30]), np.array([-1, -1]), np.array([6, 5, 7, 8])):
        got = changes.gather(rows, kind)
        want = expected[rows + 1]
        assert got.dtype == want.dtype
        assert [repr(v) for v in got.tolist()] == [repr(v) for v in want.tolist()]
    assert kind not in changes._columns  # 10 rows of 33: converted piecemeal
    changes.gather(np.arange(n - 5), kind)  # 10 + 28 >= 33 rows: now the whole column, kept
    assert kind == "value" or kind in changes._columns


def test_columns_are_converted_value_by_value_as_the_rules_say() -> None:
    """The vectorised conversions against the per-value rules: numbers are ints, floats and booleans; strict
    numbers not booleans; booleans only booleans; texts only strings; present anything but None."""
    from signals.features import _converted

    samples = [None, 3, -7, 2.5, float("nan"), float("inf"), True, False, "text", "", "3", ["a"], {"b": 1}, 10**18, 0,
               " Admin ", "admin", "  ", "OWNER"]  # fmt: skip
    values = np.empty(len(samples), dtype=object)
    values[:] = samples

    def rule(kind: str, v: object) -> object:
        number = isinstance(v, int | float)
        return {
            "present": v is not None,
            "number": float(v) if number else math.nan,  # type: ignore[arg-type]
            "strict_number": float(v) if number and not isinstance(v, bool) else math.nan,  # type: ignore[arg-type]
            "boolean": float(v) if isinstance(v, bool) else math.nan,
            "text": v if isinstance(v, str) else None,
            "role": v.strip().lower() if isinstance(v, str) and v.strip() else None,
        }[kind]

    for kind in ("present", "number", "strict_number", "boolean", "text", "role"):
        got = _converted(values, kind)
        assert [repr(v) for v in got.tolist()] == [repr(rule(kind, v)) for v in samples], kind
        assert got.dtype == {"present": bool, "text": object, "role": object}.get(kind, float)
    assert _converted(values[:0], "text").shape == (0,)


def test_a_history_without_changes_gathers_missing_values() -> None:
    from signals.features import KeyChanges

    empty = KeyChanges(entity=np.zeros(0, np.int64), at=np.zeros(0, np.int64), values=np.empty(0, dtype=object))
    assert empty.gather(np.array([-1, -1]), "present").tolist() == [False, False]
    assert empty.gather(np.array([-1]), "text").tolist() == [None]
    assert math.isnan(empty.gather(np.array([-1]), "number")[0])


def test_property_and_ratio_signals_read_numbers_and_booleans_and_nothing_else() -> None:
    """Columns of numbers computed whole: each value as the per-value rule has it (booleans 1 / 0, numbers as
    floats, anything else NaN; a ratio NaN where either side is or the denominator is 0)."""
    from datetime import UTC, datetime

    from signals.features import History, KeyChanges, Memberships, RawFeatures, Rollups
    from signals.signal_features import signal_features

    def number(value: object) -> float:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan

    def ratio(top: object, bottom: object) -> float:
        top_number, bottom_number = number(top), number(bottom)
        if math.isnan(top_number) or math.isnan(bottom_number) or bottom_number == 0:
            return math.nan
        return top_number / bottom_number

    values = [3, 0, -2.5, True, False, None, "7", 1e308, [1], {"a": 1}, 10**15 + 1, float("inf"), 0.1]
    tops, bottoms = values, values[::-1]
    ids = np.arange(1, len(values) + 1, dtype=np.int64)
    at = datetime(2026, 3, 1, tzinfo=UTC)

    def changes(column: Sequence[object]) -> KeyChanges:
        written = np.empty(len(column), dtype=object)
        written[:] = column
        return KeyChanges.as_written(ids, np.zeros(len(ids), dtype=np.int64), written, ids)

    empty = Rollups.empty()
    properties = {"account": {"used": changes(tops), "limit": changes(bottoms)}}
    history = History(1, empty, empty, empty, properties, {}, Memberships.empty(), {})
    raw = RawFeatures(ids=np.array([*ids, 99], dtype=np.int64))  # 99: no value at all
    signals = [
        {"key": "used", "name": "Used", "kind": "property", "entity_type": "account", "property": "used"},
        {"key": "share", "name": "Share", "kind": "ratio", "entity_type": "account", "numerator": "used",
         "denominator": "limit"},
        {"key": "unknown", "name": "Unknown", "kind": "ratio", "entity_type": "account", "numerator": "nothing",
         "denominator": "limit"},
    ]  # fmt: skip

    signal_features(raw, history, "account", at, signals)

    def same(found: np.ndarray, expected: list[float]) -> bool:
        return np.array_equal(found, np.array(expected, dtype=float), equal_nan=True)

    assert same(raw.numbers["signal:used"], [number(v) for v in tops] + [math.nan])
    assert same(raw.numbers["signal:share"], [ratio(t, b) for t, b in zip(tops, bottoms, strict=True)] + [math.nan])
    assert same(raw.numbers["signal:unknown"], [math.nan] * (len(values) + 1))
