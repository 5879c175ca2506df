"""Where account/user representations get their scores from, without accounts importing scoring (DESIGN §3:
scoring depends on accounts, not the reverse). The scoring app registers itself here when it loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# (tenant id, entity type, ids) -> {id: {kind: SCORE}}
ScoreLookup = Callable[[int, str, Sequence[int]], dict[int, dict[str, dict[str, Any]]]]
# (kind, entity type) -> an expression of the current score value of the outer row (for filters/ordering)
ScoreExpression = Callable[[str, str], Any]

_lookup: ScoreLookup | None = None
_expression: ScoreExpression | None = None
KINDS_BY_ENTITY: dict[str, tuple[str, ...]] = {}


def register(*, lookup: ScoreLookup, expression: ScoreExpression, kinds: dict[str, tuple[str, ...]]) -> None:
    global _lookup, _expression
    _lookup, _expression = lookup, expression
    KINDS_BY_ENTITY.update(kinds)


def scores_for(tenant_id: int, entity_type: str, ids: Sequence[int]) -> dict[int, dict[str, dict[str, Any]]]:
    return _lookup(tenant_id, entity_type, ids) if _lookup is not None and ids else {}


def score_expression(kind: str, entity_type: str) -> Any:
    if _expression is None:
        raise LookupError("scoring is not installed")
    return _expression(kind, entity_type)
