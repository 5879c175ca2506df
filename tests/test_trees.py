"""Compiled trees (scoring/trees.py) give scikit-learn's own numbers, bit for bit: the raw prediction of every row,
and of every row with a group of columns held at fixed values, for any tree shape they accept."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from scoring.trees import MAX_LEAVES, compile_trees, leaf_sums


def _data(rows: int = 2500, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([
        rng.poisson(rng.choice([0.0, 1.0, 6.0], rows)),  # counts, many at 0
        rng.normal(size=rows),
        rng.random(rows),
        rng.integers(0, 2, rows),  # a flag
        rng.exponential(3.0, rows),
    ]).astype(float)  # fmt: skip
    x[rng.random(rows) < 0.1, 2] = np.nan  # missing values take the branch each node learned for them
    x[rng.random(rows) < 0.05, 1] = np.nan
    logit = 0.5 * x[:, 0] - np.nan_to_num(x[:, 1]) + 2.0 * np.nan_to_num(x[:, 2], nan=0.8) - x[:, 3] - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def _nodes(model: HistGradientBoostingClassifier) -> list[np.ndarray]:
    return [predictors[0].nodes for predictors in model._predictors]


def _held(x: np.ndarray, columns: list[int], values: list[float]) -> np.ndarray:
    moved = x.copy()
    moved[:, columns] = values
    return moved


@pytest.mark.parametrize("leaves", [2, 8, 9, 31, MAX_LEAVES])  # masks of 8, 16, 32 and 64 bits
def test_leaf_sums_are_scikit_learns_raw_predictions_also_with_columns_held(leaves: int) -> None:
    x, y = _data()
    model = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=leaves, min_samples_leaf=5, random_state=1)
    model.fit(x, y)
    trees = compile_trees(_nodes(model))
    assert trees is not None
    holds = [([0], [0.0]), ([1, 2], [0.25, 0.5]), ([2], [np.nan]), ([3], [1.0]), ([4], [np.inf])]
    unseen = x.copy()
    unseen[::7, 4] = np.inf  # beyond every threshold, and below every one
    unseen[::11, 1] = -np.inf

    for rows in (x, unseen, x[:1], x[:0]):
        raw, held = leaf_sums(trees, rows, float(model._baseline_prediction[0, 0]), holds)

        assert np.array_equal(raw, model.decision_function(rows) if len(rows) else np.zeros(0))
        for slot, (columns, values) in enumerate(holds):
            expected = model.decision_function(_held(rows, columns, values)) if len(rows) else np.zeros(0)
            assert np.array_equal(held[:, slot], expected), (leaves, columns)


def test_trees_that_never_split_add_their_single_leaf() -> None:
    x, y = _data(rows=300)
    model = HistGradientBoostingClassifier(max_iter=15, random_state=2).fit(x, y)
    for iteration in (0, 6):  # as a boosting round that found no split leaves it: one leaf, the root
        predictor = model._predictors[iteration][0]
        predictor.nodes = predictor.nodes[:1].copy()
        predictor.nodes["is_leaf"] = True
    trees = compile_trees(_nodes(model))
    assert trees is not None

    raw, held = leaf_sums(trees, x, float(model._baseline_prediction[0, 0]), [([0], [3.0])])

    assert np.array_equal(raw, model.decision_function(x))
    assert np.array_equal(held[:, 0], model.decision_function(_held(x, [0], [3.0])))


def test_trees_it_cannot_serve_are_refused() -> None:
    x, y = _data(rows=1500)
    x[:, 3] = np.random.default_rng(3).integers(0, 4, len(x))
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[3], random_state=3).fit(x, y)
    wide = HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=MAX_LEAVES + 1, min_samples_leaf=2).fit(x, y)

    assert any(tree["is_categorical"].any() for tree in _nodes(categorical))
    assert compile_trees(_nodes(categorical)) is None
    assert max(int(tree["is_leaf"].sum()) for tree in _nodes(wide)) > MAX_LEAVES
    assert compile_trees(_nodes(wide)) is None
