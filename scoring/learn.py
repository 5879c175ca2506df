"""The machine learning of scoring, pure (numpy + scikit-learn, no Django): fit candidates on older
snapshots, pick on a newer slice, calibrate on it, evaluate on the newest, explain single scores.

Time-based split (DESIGN §10): snapshots sorted by date; the newest ~20% are the evaluation set, the
~20% before them the calibration/selection slice, the rest the fitting set. No class re-weighting,
so the probabilities stay probabilities; calibration (isotonic with enough data, else sigmoid) is fitted
on the calibration slice only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from scoring.trees import CompiledTrees, compile_trees, leaf_sums

MIN_POSITIVES = 5  # below this many positive labels a model is not trained: the rule-based score stands
MIN_EVAL_POSITIVES = 2
ISOTONIC_MIN_ROWS = 3000  # isotonic overfits smaller slices (scikit-learn advises >> 1000)
ISOTONIC_MIN_POSITIVES = 150
RANDOM_STATE = 20261122
REASON_GROUPS = 8  # explain by the most important feature groups only (cost: one prediction per group)


class NotEnoughLabels(ValueError):
    pass


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean prediction| over equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return float(total / max(len(y), 1))


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    order = np.argsort(-p, kind="stable")
    base = float(y.mean()) if len(y) else 0.0
    top10 = order[: max(1, math.ceil(len(y) * 0.1))]
    top20 = order[: max(1, math.ceil(len(y) * 0.2))]
    lift = float(y[top10].mean()) / base if base > 0 else 0.0
    recall = float(y[top20].sum()) / float(y.sum()) if y.sum() > 0 else 0.0
    return {"lift_top_decile": round(lift, 3), "recall_top_20": round(recall, 3)}


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    return round(float(roc_auc_score(y, score)), 4) if len(np.unique(y)) == 2 else math.nan


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    both = len(np.unique(y)) == 2
    return {
        "auc": _auc(y, p),
        "pr_auc": round(float(average_precision_score(y, p)), 4) if both else math.nan,
        "brier": round(float(brier_score_loss(y, p)), 4),
        "ece": round(expected_calibration_error(y, p), 4),
        **ranking_metrics(y, p),
    }


def split_by_time(snapshot_of_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row masks (fit, calibrate, evaluate) from each row's snapshot ordinal (larger = newer)."""
    snapshots = np.unique(snapshot_of_row)
    if len(snapshots) < 3:
        raise NotEnoughLabels(f"needs at least 3 weekly snapshots with labels, has {len(snapshots)}")
    n_eval = max(1, round(len(snapshots) * 0.2))
    n_cal = max(1, round(len(snapshots) * 0.2))
    eval_from = snapshots[-n_eval]
    cal_from = snapshots[-(n_eval + n_cal)]
    fit = snapshot_of_row < cal_from
    calibrate = (snapshot_of_row >= cal_from) & (snapshot_of_row < eval_from)
    return fit, calibrate, snapshot_of_row >= eval_from


def _candidates() -> dict[str, Callable[[], Any]]:
    return {
        # Small trees and a slow rate: product tables are a few thousand rows of noisy counts.
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(
            max_iter=200,
            learning_rate=0.03,
            max_leaf_nodes=8,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=RANDOM_STATE,
        ),
        "logistic_regression": lambda: make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=0.5, max_iter=2000),
        ),
    }


class Blend(ClassifierMixin, BaseEstimator):
    """The mean probability of already-fitted models: the boosted trees' interactions and the logistic
    regression's smooth extrapolation, often better together than either (selected only if it is)."""

    def __init__(self, models: Sequence[Any] = ()) -> None:
        self.models = models

    def fit(self, x: np.ndarray, y: np.ndarray) -> Blend:  # the parts are fitted already
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([model.predict_proba(x) for model in self.models], axis=0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Log-odds, so a sigmoid calibration works on the scale it assumes."""
        return self.log_odds(self.predict_proba(x)[:, 1])

    @staticmethod
    def log_odds(positive: np.ndarray) -> np.ndarray:
        p = np.clip(positive, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))


@dataclass
class Trained:
    """A calibrated model with what explaining its scores needs (pickled into ModelVersion.artifact)."""

    algorithm: str
    model: Any  # calibrated; has predict_proba
    base: Any  # the same model before calibration: smooth, so single-feature changes show (reasons)
    columns: list[str]
    groups: list[list[int]]  # feature groups (a number, or all one-hot columns of a category)
    group_names: list[str]
    reference: np.ndarray  # the typical row: medians (numbers), mode (categories) of the fitting set
    positive_medians: dict[str, float]  # per column, among positive training rows (for "4.1x the median of…")
    importances: dict[str, float] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive): model.predict_proba's numbers, by the calibration of the base model's decision values where
        the compiled trees give those (every tree at once instead of one after another)."""
        if not len(x):
            return np.zeros(0)
        if _is_linear(self.base):  # no decision values at hand: no shortcut
            return np.asarray(self.model.predict_proba(x)[:, 1], dtype=float)
        _base, _shifted, decision = _shifted_probabilities(self.base, x, [])
        values = None if decision is None else calibrated_from_decision(self.model, self.base, decision)
        return np.asarray(self.model.predict_proba(x)[:, 1], dtype=float) if values is None else values

    def explained_groups(self) -> list[int]:
        """The feature groups reasons are drawn from: the REASON_GROUPS most important."""
        ranked = sorted(range(len(self.groups)), key=lambda g: -self.importances.get(self.group_names[g], 0.0))
        return ranked[:REASON_GROUPS]

    def contributions(self, x: np.ndarray) -> tuple[list[int], np.ndarray]:
        """(group indices, array rows x groups): how much each of the most important groups moves each score
        away from the score the same entity would have with that group at its typical value."""
        _values, ranked, result = self.scores_and_contributions(x)
        return ranked, result

    def scores_and_contributions(self, x: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """`predict(x)` and `contributions(x)` in one pass. The scores are the calibration of the base model's
        decision values, which explaining computes anyway: the same numbers as predict's, without evaluating
        every tree a second time."""
        ranked = self.explained_groups()
        if not len(x) or not ranked:
            return self.predict(x), ranked, np.zeros((len(x), len(ranked)))
        # Attribution on the uncalibrated model: calibration is monotone (it keeps every direction), but
        # isotonic steps would turn tiny changes into jumps and large ones into none.
        result = np.zeros((len(x), len(ranked)))
        decisions: list[np.ndarray | None] = []
        shifts = [(self.groups[g], self.reference[self.groups[g]]) for g in ranked]
        for start in range(0, len(x), CONTRIBUTION_ROWS):
            part = x[start : start + CONTRIBUTION_ROWS]
            base, shifted, decision = _shifted_probabilities(self.base, part, shifts)
            result[start : start + len(part)] = base[:, None] - shifted
            decisions.append(decision)
        values = None
        if all(decision is not None for decision in decisions):
            values = calibrated_from_decision(self.model, self.base, np.concatenate(decisions))  # type: ignore[arg-type]
        return (self.predict(x) if values is None else values), ranked, result


def calibrated_from_decision(model: Any, base: Any, decision: np.ndarray) -> np.ndarray | None:
    """P(positive) as `model.predict_proba(x)[:, 1]` gives it — a CalibratedClassifierCV of the binary estimator
    `base`, which has a decision function — from base's decision values on x; None for any other model."""
    if not isinstance(model, CalibratedClassifierCV) or len(model.classes_) != 2:
        return None
    calibrated = model.calibrated_classifiers_
    if not hasattr(base, "decision_function") or not all(
        part.method in ("sigmoid", "isotonic") and len(part.calibrators) == 1
        and getattr(part.estimator, "estimator", part.estimator) is base
        for part in calibrated
    ):  # fmt: skip
        return None
    total = np.zeros(len(decision))
    for part in calibrated:  # as CalibratedClassifierCV.predict_proba: each part's proba, clipped, then the mean
        proba = np.asarray(part.calibrators[0].predict(decision), dtype=float)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        total += proba
    total /= len(calibrated)
    return total


CONTRIBUTION_ROWS = 20_000  # rows explained at a time (a chunk's per-tree values stay a few 10 MB)


def _shifted_probabilities(
    model: Any, x: np.ndarray, shifts: Sequence[tuple[list[int], np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """P(positive) of the rows of `x` (model.predict_proba), rows x shifts: the same with each shift's columns
    set to its values, and the model's decision values on `x` (decision_function; None where not at hand). A
    row already at those values keeps its probability, unpredicted; gradient boosting (alone or in a Blend) is
    evaluated by its compiled trees, every tree at once, and a shift only swaps the tests of the shifted columns
    (scoring/trees.py). The numbers are exactly those of predict_proba and decision_function: the same leaves,
    added up in the same order."""
    moved = [np.flatnonzero(~np.all(x[:, columns] == values, axis=1)) for columns, values in shifts]
    parts = list(model.models) if isinstance(model, Blend) else [model]
    if isinstance(model, Blend) and not all(
        isinstance(part, HistGradientBoostingClassifier) or _is_linear(part) for part in parts
    ):
        parts = [model]  # an unusual blend: predict it as a whole
    per_part = [_part_probabilities(part, x, shifts, moved) for part in parts]
    if len(per_part) == 1:
        base, shifted, decision = per_part[0]
    else:  # a Blend: the mean of its models' probabilities, as Blend.predict_proba takes it
        base = np.mean([probabilities[0] for probabilities in per_part], axis=0)
        shifted = np.mean([probabilities[1] for probabilities in per_part], axis=0)
    if isinstance(model, Blend):
        decision = Blend.log_odds(base)
    result = np.repeat(base[:, None], len(shifts), axis=1)
    for slot, rows in enumerate(moved):
        result[rows, slot] = shifted[rows, slot]
    return base, result, decision


def _is_linear(model: Any) -> bool:
    return not isinstance(model, HistGradientBoostingClassifier | Blend)


def _part_probabilities(
    model: Any, x: np.ndarray, shifts: Sequence[tuple[list[int], np.ndarray]], moved: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(P(positive) of x, rows x shifts where moved, the decision values of x if at hand) for one model."""
    shifted = np.zeros((len(x), len(shifts)))
    trees = compiled_trees(model) if isinstance(model, HistGradientBoostingClassifier) else None
    if trees is not None:
        return _tree_probabilities(model, trees, x, shifts)
    base = np.asarray(model.predict_proba(x)[:, 1], dtype=float)
    batches = []
    for (columns, values), rows in zip(shifts, moved, strict=True):
        if len(rows):
            batch = x[rows]
            batch[:, columns] = values
            batches.append(batch)
    if batches:
        predicted = np.asarray(model.predict_proba(np.vstack(batches))[:, 1], dtype=float)
        start = 0
        for slot, rows in enumerate(moved):
            shifted[rows, slot] = predicted[start : start + len(rows)]
            start += len(rows)
    return base, shifted, None


_compiled: WeakKeyDictionary[Any, CompiledTrees | None] = WeakKeyDictionary()


def compiled_trees(model: HistGradientBoostingClassifier) -> CompiledTrees | None:
    """The model's trees compiled for evaluating all at once (scoring/trees.py), once per model; None for a model
    they cannot serve: not a binary classifier (one tree per iteration), or with categorical splits."""
    if model not in _compiled:
        try:
            binary = model.n_trees_per_iteration_ == 1
            nodes = [predictors[0].nodes for predictors in model._predictors]
            _compiled[model] = compile_trees(nodes) if binary else None
        except (AttributeError, KeyError, ValueError):
            _compiled[model] = None
    return _compiled[model]


def _tree_probabilities(
    model: HistGradientBoostingClassifier,
    trees: CompiledTrees,
    x: np.ndarray,
    shifts: Sequence[tuple[list[int], np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(positive) of x, rows x shifts: the same with each shift's columns set to its values, the decision values
    of x): predict_proba's and decision_function's numbers, from the compiled trees' leaf sums."""
    raw, held = leaf_sums(trees, model._preprocess_X(x, reset=False), float(model._baseline_prediction[0, 0]), shifts)

    def probabilities(values: np.ndarray) -> np.ndarray:
        return np.asarray(model._loss.predict_proba(values.reshape(-1, 1))[:, 1], dtype=float).reshape(values.shape)

    return probabilities(raw), probabilities(held), raw


def feature_groups(columns: Sequence[str]) -> tuple[list[list[int]], list[str]]:
    groups: dict[str, list[int]] = {}
    for n, column in enumerate(columns):
        groups.setdefault(column.split("=", 1)[0], []).append(n)
    return list(groups.values()), list(groups)


def _reference(x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    reference = np.zeros(x.shape[1])
    with np.errstate(all="ignore"):
        medians = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0) if len(x) else reference
    reference[:] = np.where(np.isnan(medians), 0.0, medians)
    groups, _names = feature_groups(columns)
    for group in groups:
        if len(group) > 1 or "=" in columns[group[0]]:  # one-hot: the typical row has the most common value
            counts = x[:, group].sum(axis=0)
            reference[group] = 0.0
            if counts.max() > 0:
                reference[group[int(np.argmax(counts))]] = 1.0
    return reference


@dataclass
class Fitted:
    trained: Trained | None
    metrics: dict[str, Any]
    report: dict[str, Any]


def train(
    x: np.ndarray,
    y: np.ndarray,
    snapshot_of_row: np.ndarray,
    columns: Sequence[str],
    baseline: np.ndarray,
) -> Fitted:
    """Fit, select, calibrate and evaluate. `baseline` is the rule-based score of every row, evaluated beside.

    On one thread: a tenant's tables are small, and OpenMP threads that wait for busy cores (other workers, other
    processes) made a 5 s training take 25 s on a loaded 2-core machine, and over 100 s under heavier load."""
    with threadpool_limits(limits=1):
        return _train(x, y, snapshot_of_row, columns, baseline)


def _train(
    x: np.ndarray, y: np.ndarray, snapshot_of_row: np.ndarray, columns: Sequence[str], baseline: np.ndarray
) -> Fitted:
    y = y.astype(int)
    fit, calibrate, holdout = split_by_time(snapshot_of_row)
    # A column unknown on every fitting row carries nothing to learn, and HistGradientBoosting's binning fails
    # on it: make it a constant (a model never splits on or weighs a constant, so later values are ignored).
    empty = np.isnan(x[fit]).all(axis=0) if fit.any() else np.zeros(x.shape[1], dtype=bool)
    if empty.any():
        x = x.copy()
        x[:, empty] = 0.0
    positives = int(y[fit].sum())
    if positives < MIN_POSITIVES or int(y[holdout].sum()) < MIN_EVAL_POSITIVES or int(y[calibrate].sum()) < 1:
        raise NotEnoughLabels(
            f"needs at least {MIN_POSITIVES} positive labels to train on and {MIN_EVAL_POSITIVES} to evaluate on; "
            f"has {positives} and {int(y[holdout].sum())}"
        )
    candidates: dict[str, Any] = {}
    selection: dict[str, float] = {}
    for name, make in _candidates().items():
        model = make().fit(x[fit], y[fit])
        candidates[name] = model
        p_cal = model.predict_proba(x[calibrate])[:, 1]
        selection[name] = float(roc_auc_score(y[calibrate], p_cal)) if len(np.unique(y[calibrate])) == 2 else 0.0
    blend = Blend(list(candidates.values())).fit(x[fit], y[fit])
    candidates["blend"] = blend
    p_cal = blend.predict_proba(x[calibrate])[:, 1]
    selection["blend"] = float(roc_auc_score(y[calibrate], p_cal)) if len(np.unique(y[calibrate])) == 2 else 0.0
    algorithm = max(selection, key=lambda name: (round(selection[name], 3), name == "logistic_regression"))
    n_cal, cal_positives = int(calibrate.sum()), int(y[calibrate].sum())
    method = "isotonic" if n_cal >= ISOTONIC_MIN_ROWS and cal_positives >= ISOTONIC_MIN_POSITIVES else "sigmoid"
    calibrated = CalibratedClassifierCV(FrozenEstimator(candidates[algorithm]), method=method)
    calibrated.fit(x[calibrate], y[calibrate])

    p_eval = calibrated.predict_proba(x[holdout])[:, 1]
    metrics: dict[str, Any] = evaluate(y[holdout], p_eval)
    baseline_auc = _auc(y[holdout], baseline[holdout])  # a rule score ranks; it is not a probability
    metrics.update(
        baseline_auc=baseline_auc,
        n_train=int(fit.sum()),
        n_positive=positives,
        n_calibration=n_cal,
        n_eval=int(holdout.sum()),
        n_eval_positive=int(y[holdout].sum()),
    )
    groups, group_names = feature_groups(columns)
    importances = _importances(calibrated, x[holdout], y[holdout], groups, group_names)
    trained = Trained(
        algorithm=algorithm,
        model=calibrated,
        base=candidates[algorithm],
        columns=list(columns),
        groups=groups,
        group_names=group_names,
        reference=_reference(x[fit], columns),
        positive_medians=_positive_medians(x[fit], y[fit], columns),
        importances=importances,
    )
    prob_true, prob_pred = calibration_curve(y[holdout], p_eval, n_bins=10, strategy="quantile")
    report = {
        "algorithm": algorithm,
        "calibration_method": method,
        "selection_auc": {name: round(value, 4) for name, value in selection.items()},
        "calibration_curve": [
            {"predicted": round(float(a), 4), "observed": round(float(b), 4)}
            for a, b in zip(prob_pred, prob_true, strict=True)
        ],
        "feature_importances": dict(sorted(importances.items(), key=lambda item: -item[1])[:25]),
        "baseline": {"auc": baseline_auc, **ranking_metrics(y[holdout], baseline[holdout])},
    }
    return Fitted(trained=trained, metrics=metrics, report=report)


def _importances(
    model: Any, x: np.ndarray, y: np.ndarray, groups: list[list[int]], names: list[str]
) -> dict[str, float]:
    """Permutation importance per feature group on the evaluation rows (AUC lost when it is shuffled)."""
    if len(np.unique(y)) < 2 or not len(x):
        return {}
    rng = np.random.default_rng(RANDOM_STATE)
    sample = rng.choice(len(x), size=min(len(x), 3000), replace=False)
    xs, ys = x[sample], y[sample]
    if len(np.unique(ys)) < 2:
        return {}
    if all(len(group) == 1 for group in groups):
        result = permutation_importance(model, xs, ys, scoring="roc_auc", n_repeats=3, random_state=RANDOM_STATE)
        return {name: round(float(result.importances_mean[g[0]]), 5) for name, g in zip(names, groups, strict=True)}
    base = float(roc_auc_score(ys, model.predict_proba(xs)[:, 1]))
    importances = {}
    for name, group in zip(names, groups, strict=True):
        drops = []
        for _repeat in range(3):
            shuffled = xs.copy()
            shuffled[:, group] = xs[rng.permutation(len(xs))][:, group]
            drops.append(base - float(roc_auc_score(ys, model.predict_proba(shuffled)[:, 1])))
        importances[name] = round(float(np.mean(drops)), 5)
    return importances


def _positive_medians(x: np.ndarray, y: np.ndarray, columns: Sequence[str]) -> dict[str, float]:
    positive = x[y == 1]
    if not len(positive):
        return {}
    with np.errstate(all="ignore"):
        medians = np.nanmedian(np.where(np.isfinite(positive), positive, np.nan), axis=0)
    return {column: float(value) for column, value in zip(columns, medians, strict=True) if not np.isnan(value)}


# --- grades --------------------------------------------------------------------------------------------


def percentiles(values: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each value within the population (share of the population at or below it)."""
    if not len(population):
        return np.full(len(values), 100, dtype=int)
    ordered = np.sort(population)
    at_or_below = np.searchsorted(ordered, values, side="right")
    return np.clip(np.round(100.0 * at_or_below / len(ordered)), 0, 100).astype(int)


def grades(percentile: np.ndarray) -> np.ndarray:
    """1-5 by percentile quintile: 5 is the top 20% of the tenant."""
    return np.clip(np.asarray(percentile) // 20 + 1, 1, 5).astype(int)
