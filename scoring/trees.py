"""Every tree of a gradient-boosted model evaluated at once, with numpy, by leaf bitmasks (QuickScorer: Lucchese
et al., SIGIR 2015) — and again with a group of columns held at fixed values, which is what explaining a score
asks for (scoring/learn.py). Pure: numpy only.

Number a tree's leaves left to right. A split node whose test sends a row right rules out every leaf of its left
subtree; the leaf the row reaches is the leftmost leaf no such node rules out. So a row's leaf is the lowest bit of
the AND, over the tree's split nodes, of "all leaves" or "all but my left subtree's". Each factor depends on one
column only, which is why holding a group of columns at fixed values only swaps the factors of the nodes that test
them: no tree is walked again. The leaves, and the sums of their values in tree order, are exactly those of
scikit-learn's predictor (`data <= threshold` goes left, NaN goes where the node sends missing values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING = 255  # the rank of NaN: a column is tested against at most 254 thresholds (histogram gradient boosting
# bins each column into at most 255 bins)
MAX_LEAVES = 64  # the masks are unsigned integers of up to 64 bits
ROWS_AT_ONCE = 8192  # rows x split nodes bytes of factors at a time
Held = Sequence[float] | np.ndarray  # the values a hold sets its columns to
_LOWEST_BIT = np.array([(n & -n).bit_length() - 1 if n else 0 for n in range(256)], dtype=np.intp)


@dataclass(frozen=True)
class CompiledTrees:
    """Split nodes as arrays of slots x trees: slot k of tree t is its k-th split node, or a padding node whose
    factor is always "all leaves" (a tree with fewer splits than the widest)."""

    column: np.ndarray  # slots x trees: the column each node tests
    rank: np.ndarray  # goes right when the value's rank (`ranks`) is above this and at most `most`
    most: np.ndarray  # MISSING where a missing value goes right, else MISSING - 1
    thresholds: dict[int, np.ndarray]  # per column tested: its nodes' thresholds, sorted, distinct
    left: np.ndarray  # the leaves of each node's left subtree: ruled out when a row goes right (0: padding)
    leaf_of_mask: np.ndarray | None  # trees x 256: the leaf value a mask of ruled-out leaves selects (one byte)
    leaf_values: np.ndarray  # trees x widest: the leaf values, by left-to-right leaf number
    dtype: type

    @property
    def trees(self) -> int:
        return int(self.column.shape[1])


def _walk(nodes: np.ndarray) -> tuple[list[float], list[tuple[int, float, bool, int]]]:
    """(the tree's leaf values, left to right; its split nodes as (column, threshold, NaN goes left, the leaves of
    its left subtree as a bit mask))."""
    leaves: list[float] = []
    splits: list[tuple[int, float, bool, int]] = []

    def walk(node: int) -> tuple[int, int]:
        """Number the leaves under `node` left to right; (first, last) leaf number under it."""
        if nodes["is_leaf"][node]:
            leaves.append(float(nodes["value"][node]))
            return len(leaves) - 1, len(leaves) - 1
        first, middle = walk(int(nodes["left"][node]))
        _, last = walk(int(nodes["right"][node]))
        left = ((1 << (middle + 1)) - 1) ^ ((1 << first) - 1)
        splits.append((int(nodes["feature_idx"][node]), float(nodes["num_threshold"][node]),
                       bool(nodes["missing_go_to_left"][node]), left))  # fmt: skip
        return first, last

    walk(0)
    return leaves, splits


def compile_trees(nodes_of_trees: Sequence[np.ndarray]) -> CompiledTrees | None:
    """From scikit-learn's predictor nodes (`TreePredictor.nodes`, root first), or None when a tree has a
    categorical split or more than MAX_LEAVES leaves."""
    splits_of_trees, leaves_of_trees = [], []
    for nodes in nodes_of_trees:
        if nodes["is_categorical"].any():
            return None
        leaves, splits = _walk(nodes)
        if len(leaves) > MAX_LEAVES:
            return None
        splits_of_trees.append(splits)
        leaves_of_trees.append(leaves)
    trees = len(leaves_of_trees)
    widest = max((len(leaves) for leaves in leaves_of_trees), default=1)
    dtype = next(kind for kind in (np.uint8, np.uint16, np.uint32, np.uint64) if np.iinfo(kind).bits >= widest)
    slots = max((len(splits) for splits in splits_of_trees), default=0)
    column = np.zeros((slots, trees), dtype=np.intp)
    threshold = np.full((slots, trees), np.inf)
    nan_left = np.ones((slots, trees), dtype=bool)
    pad = np.ones((slots, trees), dtype=bool)
    left_of = np.zeros((slots, trees), dtype=dtype)
    leaf_values = np.zeros((trees, widest))
    for tree, (splits, leaves) in enumerate(zip(splits_of_trees, leaves_of_trees, strict=True)):
        for slot, (tested, limit, missing_left, left) in enumerate(splits):
            column[slot, tree], threshold[slot, tree], nan_left[slot, tree] = tested, limit, missing_left
            pad[slot, tree] = False
            left_of[slot, tree] = left
        leaf_values[tree, : len(leaves)] = leaves
    leaf_of_mask = None
    if dtype is np.uint8:
        leaf_of_mask = np.ascontiguousarray(leaf_values[:, _LOWEST_BIT[~np.arange(256) & 255] % widest])
    thresholds = {int(tested): np.unique(threshold[~pad & (column == tested)]) for tested in np.unique(column[~pad])}
    if any(len(values) >= MISSING for values in thresholds.values()):
        return None
    rank = np.full((slots, trees), MISSING, dtype=np.uint8)  # padding: never right
    for tested, values in thresholds.items():
        at = ~pad & (column == tested)
        rank[at] = np.searchsorted(values, threshold[at])
    most = np.where(nan_left, MISSING - 1, MISSING).astype(np.uint8)
    return CompiledTrees(column, rank, most, thresholds, left_of, leaf_of_mask, leaf_values, dtype)


def ranks(trees: CompiledTrees, x: np.ndarray) -> np.ndarray:
    """columns x rows (x's columns, one row each): how many of the thresholds the trees test the column against
    lie below each value (value > threshold number k exactly when the rank is above k), MISSING for NaN."""
    result = np.zeros((x.shape[1], len(x)), dtype=np.uint8)
    for column, values in trees.thresholds.items():
        data = x[:, column]
        result[column] = np.searchsorted(values, data, side="left")
        result[column, np.isnan(data)] = MISSING
    return result


def _ruled_out(trees: CompiledTrees, ranked: np.ndarray, which: Any) -> np.ndarray:
    """slots x trees x rows: the leaves each node of trees `which` rules out for each row (`ranks`)."""
    values = ranked[trees.column[:, which]]
    right = (values > trees.rank[:, which, None]) & (values <= trees.most[:, which, None])
    return right.astype(trees.dtype) * trees.left[:, which, None]


def _or(ruled_out: np.ndarray) -> np.ndarray:
    """trees x rows: the leaves any slot rules out (the row's leaf is the lowest one left)."""
    masks = ruled_out[0].copy()
    for more in ruled_out[1:]:
        masks |= more
    return masks


def _leaf_values(trees: CompiledTrees, which: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """len(which) x rows: the value of the leaf each mask of trees `which` selects."""
    if trees.leaf_of_mask is not None:
        return np.take(trees.leaf_of_mask.ravel(), masks + (which * 256)[:, None])
    masks = ~masks
    lowest = masks & (~masks + trees.dtype(1))
    leaf = np.log2(lowest.astype(float)).astype(np.intp)  # exact: powers of two
    return trees.leaf_values[which[:, None], leaf]


def leaf_sums(
    trees: CompiledTrees, x: np.ndarray, baseline: float, holds: Sequence[tuple[Sequence[int], Held]]
) -> tuple[np.ndarray, np.ndarray]:
    """(the raw prediction of each row of `x`: baseline + each tree's leaf, added in tree order; rows x holds: the
    same with each hold's columns set to its values). The numbers of scikit-learn's `_raw_predict`, bit for bit."""
    raw = np.empty(len(x))
    held = np.empty((len(x), len(holds)))
    every_tree = np.arange(trees.trees)
    plans = []
    for columns, values in holds:
        row = np.zeros((1, x.shape[1]))
        row[0, list(columns)] = values
        at = np.isin(trees.column, list(columns)) & (trees.left != 0)  # the nodes testing them
        touched = np.flatnonzero(at.any(axis=0))
        plans.append((touched, at[:, touched], _ruled_out(trees, ranks(trees, row), touched)))
    for start in range(0, len(x), ROWS_AT_ONCE):
        part = x[start : start + ROWS_AT_ONCE]
        rows = slice(start, start + len(part))
        factors = _ruled_out(trees, ranks(trees, part), every_tree)
        masks = _or(factors)
        # (1 + trees) x rows: the baseline, then each tree's leaf value, to add up in that order
        values = np.empty((1 + trees.trees, len(part)))
        values[0] = baseline
        values[1:] = _leaf_values(trees, every_tree, masks)
        raw[rows] = _in_order(values)
        for slot, (touched, at, constant) in enumerate(plans):
            if not len(touched):
                held[rows, slot] = raw[rows]
                continue
            own = factors[:, touched]
            own[at] = np.broadcast_to(constant, own.shape)[at]  # a held node sends every row the same way
            changed = _or(own)
            # Every row, moved or not: most rows move, and picking them out costs more than adding the others (a
            # row that does not move adds up the same leaves, to the same raw prediction).
            instead = dict(zip((1 + touched).tolist(), _leaf_values(trees, touched, changed), strict=True))
            held[rows, slot] = _in_order(values, instead)
    return raw, held


def _in_order(values: np.ndarray, instead: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Each column's sum, added top to bottom, one row after the other, as scikit-learn adds its trees (a reduction
    by numpy may add pairwise, which rounds differently); `instead` replaces some rows."""
    instead = instead or {}
    total = instead.get(0, values[0]).copy()
    for at in range(1, len(values)):
        total += instead.get(at, values[at])
    return total
