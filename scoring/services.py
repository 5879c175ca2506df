"""Scoring operations: settings, training a model version, (re)scoring entities with reasons, champions.

Kinds: conversion and churn (accounts), health (users) are learned per tenant once it has labels
(until then, and whenever a trained model does not beat it, a transparent rule-based score stands);
champion (a user within one account) is a transparent weighted score by design.
"""

from __future__ import annotations

import contextvars
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from queue import SimpleQueue
from typing import Any

import numpy as np
import orjson
from django.db import connection, transaction
from django.db.models import Max
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from accounts.models import Account, EndUser, EntityType, Membership
from plgapp.models import AlsoInto, Tenant, copy_text
from scoring import config as scoring_config
from scoring.datasets import eligible, features, horizon_days, midnight, training_set
from scoring.learn import NotEnoughLabels, Trained, grades, percentiles, train
from scoring.models import (
    ENTITY_OF_KIND,
    LeadDisposition,
    LeadOutcome,
    ModelStatus,
    ModelVersion,
    Score,
    ScoredEntity,
    ScoreHistory,
    ScoreKind,
    ScoringSettings,
)
from scoring.qualification import qualification
from scoring.reasons import MAX_REASONS_PER_DIRECTION, MIN_WEIGHT, PEERS, render
from scoring.rules import rule_scores, signal_components
from signals.features import (
    ENTITY_TYPES,
    LEVELS,
    WINDOWS,
    FeatureSpec,
    History,
    RawFeatures,
    Scope,
    TeamActivity,
    entity_slots,
    key_events_of,
    load_history,
    pg_array,
    property_column,
    team_activity,
)

logger = logging.getLogger(__name__)
LEARNED_KINDS = (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.HEALTH)
HISTORY_MIN_CHANGE = 0.01
SCORING_LOOKBACK_DAYS = max(WINDOWS) + 70  # the longest window, plus the trend's previous 30 days, plus slack
PAIR_LOOKBACK_DAYS = 31  # user-in-account activity is read over 30 days (active seats, champions), plus a day
WRITE_BATCH = 5_000  # scores per COPY: the writer stores a chunk while the reasons of the next are computed
MEMBERSHIP_KEYS: dict[str, list[str]] = {EntityType.MEMBERSHIP: ["role"]}  # the membership property features read
# What training each kind reads: the rollup levels, and whose properties.
TRAINING_DATA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ScoreKind.CONVERSION: (("account", "pair"), (EntityType.ACCOUNT, EntityType.MEMBERSHIP)),
    ScoreKind.CHURN: (("account", "pair"), (EntityType.ACCOUNT, EntityType.MEMBERSHIP)),
    ScoreKind.HEALTH: (("user",), (EntityType.USER, EntityType.MEMBERSHIP)),
}


# --- where the time goes (benchmarks, profiling) ------------------------------------------------------------

_phases: ContextVar[dict[str, float] | None] = ContextVar("scoring_phases", default=None)


@contextmanager
def phase_timings() -> Iterator[dict[str, float]]:
    """Seconds per phase (load_history, features, predict, reasons, write, train.*) of the scoring inside."""
    collected: dict[str, float] = {}
    token = _phases.set(collected)
    try:
        yield collected
    finally:
        _phases.reset(token)


@contextmanager
def _phase(name: str) -> Iterator[None]:
    collected = _phases.get()
    if collected is None:
        yield
        return
    began = time.perf_counter()
    try:
        yield
    finally:
        collected[name] = collected.get(name, 0.0) + time.perf_counter() - began


# --- settings ---------------------------------------------------------------------------------------


def settings_get(*, tenant: Tenant) -> dict[str, Any]:
    stored = ScoringSettings.objects.for_tenant(tenant).values_list("settings", flat=True).first()
    return scoring_config.merged(stored)


def working_settings(*, tenant: Tenant) -> dict[str, Any]:
    """The settings scoring runs with: the stored settings plus the tenant's signal definitions."""
    from signals.models import Signal

    settings = settings_get(tenant=tenant)
    settings["signals"] = [signal.as_definition() for signal in Signal.objects.for_tenant(tenant).order_by("key")]
    return settings


def settings_set(*, tenant: Tenant, raw: Any, now: datetime) -> dict[str, Any]:
    """Validate and store a whole settings document (raises ConfigInvalid with field messages)."""
    settings = scoring_config.validate(raw)
    ScoringSettings.objects.for_tenant(tenant).update_or_create(defaults={"settings": settings, "updated_at": now})
    return settings


# --- model versions --------------------------------------------------------------------------------------


@dataclass
class Artifact:
    trained: Trained
    spec: FeatureSpec
    key_events: list[str]


_artifacts: dict[tuple[int, str, int], Artifact] = {}


def _artifact(version: ModelVersion) -> Artifact:
    key = (version.tenant_id, version.kind, version.version)
    if key not in _artifacts:
        raw = ModelVersion.objects.for_tenant(version.tenant_id).values_list("artifact", flat=True).get(pk=version.pk)
        assert raw is not None, "an active version always has its artifact"
        _artifacts[key] = pickle.loads(bytes(raw))  # noqa: S301 - written by model_train, never by a client
    return _artifacts[key]


def active_version(*, tenant: Tenant, kind: str) -> ModelVersion | None:
    return (
        ModelVersion.objects.for_tenant(tenant).filter(kind=kind, status=ModelStatus.ACTIVE).defer("artifact").first()
    )


def model_version_start(*, tenant: Tenant, kind: str, now: datetime) -> ModelVersion:
    """A new version in status "training" (visible at once; the training runs in a task)."""
    if kind not in LEARNED_KINDS:
        raise ValueError(f"{kind} is a transparent score; only {', '.join(LEARNED_KINDS)} are trained")
    with transaction.atomic():
        versions = ModelVersion.objects.for_tenant(tenant).select_for_update()
        latest = versions.filter(kind=kind).aggregate(latest=Max("version"))["latest"] or 0
        return ModelVersion.objects.for_tenant(tenant).create(kind=kind, version=latest + 1, created_at=now)


def _candidates(tenant: Tenant, kind: str) -> list[int]:
    """Every user (health) or account id of the tenant, ascending."""
    model: type[EndUser] | type[Account] = EndUser if kind == ScoreKind.HEALTH else Account
    rows = model.objects.binary_rows(
        tenant,
        f"SELECT array_send(array_agg(id)) FROM {model._meta.db_table} WHERE tenant_id = %(tenant)s",  # noqa: S608
        {},
    )
    return np.sort(pg_array(rows[0][0] if rows else None)).tolist()


def _baseline(kind: str, tables: Sequence[RawFeatures]) -> np.ndarray:
    """The rule score of every training row, computed within its own snapshot."""
    return np.concatenate(
        [rule_scores(kind, table.numbers, len(table.ids), signal_components(table.describe, kind)).values
         for table in tables]
    )  # fmt: skip


def model_train(*, tenant: Tenant, version_id: int, now: datetime) -> ModelVersion:
    """Train the version: on success it becomes active if it beats the rule baseline, and rescoring follows."""
    version = ModelVersion.objects.for_tenant(tenant).defer("artifact").get(pk=version_id)
    kind = version.kind
    try:
        settings = working_settings(tenant=tenant)
        levels, entity_types = TRAINING_DATA[kind]
        with _phase("train.load_history"):
            history = load_history(tenant, levels=levels, entity_types=entity_types, property_keys=MEMBERSHIP_KEYS)
            earliest = _earliest(tenant)
        key_events = key_events_of(history, settings["key_events"])
        with _phase("train.features"):
            dataset = training_set(history, settings, kind, now, _candidates(tenant, kind), key_events, earliest)
        if not dataset.tables:
            raise NotEnoughLabels("no snapshot with labels yet: the history is shorter than the horizon")
        with _phase("train.fit"):
            spec = FeatureSpec.fit(dataset.tables)
            fitted = train(
                dataset.matrix(spec), dataset.labels, dataset.snapshot_of_row, spec.columns,
                _baseline(kind, dataset.tables),
            )  # fmt: skip
    except NotEnoughLabels as exc:
        version.status, version.error, version.trained_at = ModelStatus.REJECTED, str(exc), now
        version.save(update_fields=["status", "error", "trained_at"])
        return version
    except Exception as exc:
        logger.exception("training failed", extra={"tenant": tenant.pk, "kind": kind, "version": version.version})
        version.status, version.error = ModelStatus.FAILED, f"{type(exc).__name__}: {exc}"
        version.save(update_fields=["status", "error"])
        return version
    assert fitted.trained is not None
    metrics = fitted.metrics
    beats = metrics["auc"] == metrics["auc"] and metrics["auc"] > (metrics["baseline_auc"] or 0)
    version.metrics = metrics
    version.report = {
        **fitted.report,
        "snapshots": [at.date().isoformat() for at in dataset.snapshots],
        "key_events": key_events,
        "horizon_days": horizon_days(settings, kind),
        "columns": spec.columns,
    }
    version.algorithm = fitted.trained.algorithm
    version.artifact = pickle.dumps(Artifact(trained=fitted.trained, spec=spec, key_events=key_events))
    version.trained_at = now
    if not beats:
        version.status = ModelStatus.REJECTED
        version.error = f"AUC {metrics['auc']} does not beat the rule baseline's {metrics['baseline_auc']}"
        version.save()
        return version
    with transaction.atomic():
        ModelVersion.objects.for_tenant(tenant).filter(kind=kind, status=ModelStatus.ACTIVE).update(
            status=ModelStatus.RETIRED
        )
        version.status = ModelStatus.ACTIVE
        version.save()
    scores_refresh(tenant=tenant, kind=kind, now=now)
    version.scored_at = now
    version.save(update_fields=["scored_at"])
    return version


def _earliest(tenant: Tenant) -> datetime | None:
    """Midnight of the tenant's first day with activity (of any account or user)."""
    from signals.models import DailyRollup

    rows = DailyRollup.objects.sql(
        tenant,
        "SELECT min(day) FROM signals_dailyrollup WHERE tenant_id = %(tenant)s AND (account_id = 0 OR end_user_id = 0)",
        {},
    )
    first = rows[0][0] if rows else None
    return None if first is None else datetime.combine(first, datetime.min.time(), tzinfo=UTC)


# --- scoring -------------------------------------------------------------------------------------------


@dataclass
class Computed:
    ids: list[int]
    values: np.ndarray
    # The reasons of rows [start, stop) as `reason_json` gives them, computed when asked for: a rescore's writer
    # stores the first rows while the reasons of the next ones are computed (scores_refresh_kinds).
    reasons: Callable[[int, int], list[str]]
    model_version: int | None
    rule_based: bool
    details: list[dict[str, Any]] | None = None  # account kinds: activation and PQA (scoring.qualification)


def _compute(tenant: Tenant, kind: str, history: History, settings: dict[str, Any], ids: list[int],
             now: datetime) -> Computed:  # fmt: skip
    version = active_version(tenant=tenant, kind=kind)
    peers = PEERS.get(kind, "peers")
    if version is not None:
        artifact = _artifact(version)
        with _phase("features"):
            raw = features(history, settings, kind, now, ids, artifact.key_events)
            x = artifact.spec.matrix(raw)
        # One thread: OpenMP threads that wait for busy cores (other workers) made predicting 10 rows take seconds.
        with threadpool_limits(limits=1), _phase("predict"):
            values = artifact.trained.predict(x)
        with _phase("details"):
            details = _details(kind, raw, settings)
        return Computed(ids, values, _model_reasons(artifact, raw, x, peers), version.version, False, details)
    key_events = key_events_of(history, settings["key_events"])
    with _phase("features"):
        raw = features(history, settings, kind, now, ids, key_events)
    with _phase("predict"):
        scores = rule_scores(kind, raw.numbers, len(ids), signal_components(raw.describe, kind))
    with _phase("details"):
        details = _details(kind, raw, settings)
    return Computed(ids, scores.values, _rule_reasons(scores, raw, len(ids)), None, True, details)


def _chosen(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`reasons.pick` for many entities at once: per row of `weights` (entities x candidates), the candidates in
    pick's order (a row of candidate slots) and how many of them pick keeps — the 3 strongest of each direction (at
    least MIN_WEIGHT), strongest first, or else the single strongest. Texts are rendered for these only."""
    rows, size = weights.shape
    if not rows or not size:
        return np.zeros((rows, size), dtype=np.int64), np.zeros(rows, dtype=np.int64)
    positive, negative = weights >= MIN_WEIGHT, weights <= -MIN_WEIGHT
    chosen = np.zeros(weights.shape, dtype=bool)
    for allowed, key in ((positive, -weights), (negative, weights)):
        strongest = np.argsort(np.where(allowed, key, np.inf), axis=1, kind="stable")[:, :MAX_REASONS_PER_DIRECTION]
        picked = np.zeros(weights.shape, dtype=bool)
        np.put_along_axis(picked, strongest, np.take_along_axis(allowed, strongest, axis=1), axis=1)
        chosen |= picked
    none = ~chosen.any(axis=1)
    chosen[none, np.argmax(np.abs(weights[none]), axis=1)] = True
    # pick's order: by strength; at equal strength positive before negative, then candidate order (stable sorts,
    # the least significant key first)
    by_sign = np.argsort(negative, axis=1, kind="stable")
    strength = np.take_along_axis(np.where(chosen, -np.abs(weights), np.inf), by_sign, axis=1)
    order = np.take_along_axis(by_sign, np.argsort(strength, axis=1, kind="stable"), axis=1)
    return order, chosen.sum(axis=1)


def _round3(values: np.ndarray) -> list[list[float]]:
    """`round(value, 3)` of every value, as Python rounds (numpy agrees except next to a tie: those are redone)."""
    rounded = np.round(values, 3)
    scaled = np.abs(values) * 1000
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    result = rounded.tolist()
    for row, column in zip(*np.nonzero(near_tie), strict=True):
        result[row][column] = round(float(values[row, column]), 3)
    return result


def copy_json(value: Any) -> str:
    """`value` as JSON text, escaped for COPY's text format: JSON holds no raw tab or newline, so a backslash is the
    only character COPY needs escaped."""
    text = orjson.dumps(value).decode()
    return text.replace("\\", "\\\\") if "\\" in text else text


# The JSON texts of a candidate's reason for some rows (absolute row numbers), escaped for COPY.
Fragments = Callable[[np.ndarray, int], list[str]]


def reason_json(weights: np.ndarray, names: Sequence[str], fragments: Fragments, first: int = 0) -> list[str]:
    """Per row of `weights` (rows `first`, `first` + 1 … of what `fragments` renders), the JSON text, escaped for
    COPY, of what `reasons.pick` keeps: [{feature, text, direction, weight}, …]. Byte for byte what orjson makes of
    pick's dicts, assembled from pieces: texts come once per candidate and value, weights in one encoding."""
    order, counts = _chosen(weights)
    kept = np.arange(weights.shape[1]) < counts[:, None]
    pair_row = np.nonzero(kept)[0]  # row by row, each row's candidates in pick's order
    pair_slot = order[kept]
    pair_weight = weights[pair_row, pair_slot]
    texts = np.empty(len(pair_slot), dtype=object)
    for slot in np.unique(pair_slot).tolist():
        pairs = np.flatnonzero(pair_slot == slot)
        texts[pairs] = fragments(pair_row[pairs] + first, slot)
    weight_texts = orjson.dumps(_round3(pair_weight.reshape(1, -1))[0]).decode()[1:-1].split(",")
    heads = [f'{{"feature":{copy_json(name)},"text":' for name in names]
    items = [
        f'{heads[slot]}{text},"direction":"{"+" if positive else "-"}","weight":{weight}}}'
        for slot, text, positive, weight in zip(
            pair_slot.tolist(), texts.tolist(), (pair_weight >= 0).tolist(), weight_texts, strict=False
        )
    ]
    ends = np.cumsum(counts).tolist()
    return ["[" + ",".join(items[end - count : end]) + "]" for end, count in zip(ends, counts.tolist(), strict=True)]


class _Texts:
    """The reason texts of each candidate as `reason_json` takes them: `render` once per (candidate, value) —
    values repeat a lot — as COPY-ready JSON. Number candidates are float arrays; categories lists of objects."""

    def __init__(
        self, names: Sequence[str], columns: Sequence[np.ndarray | Sequence[Any]], describes: Sequence[dict[str, Any]],
        medians: Sequence[float | None], peers: str,
    ) -> None:  # fmt: skip
        self.names, self.columns, self.describes, self.medians, self.peers = names, columns, describes, medians, peers
        self.cache: list[dict[Any, str]] = [{} for _name in names]

    def _fragment(self, slot: int, value: Any) -> str:
        key = value if value == value else _NAN  # NaN is not equal to itself: one key for all of them
        found = self.cache[slot].get(key)
        if found is None:
            if isinstance(self.columns[slot], np.ndarray):
                text = render(self.names[slot], float(value), self.describes[slot], median=self.medians[slot],
                              peers=self.peers)  # fmt: skip
            else:
                describe = {**self.describes[slot], "value": value or "unknown"}
                text = render(self.names[slot], 0.0, describe, median=self.medians[slot], peers=self.peers)
            found = self.cache[slot][key] = copy_json(text)
        return found

    def __call__(self, rows: np.ndarray, slot: int) -> list[str]:
        column = self.columns[slot]
        if isinstance(column, np.ndarray):
            distinct, inverse = np.unique(column[rows], return_inverse=True)
            texts = np.array([self._fragment(slot, value) for value in distinct.tolist()], dtype=object)
            return texts[inverse.reshape(-1)].tolist()
        return [self._fragment(slot, column[row]) for row in rows.tolist()]


_NAN = object()


def _model_reasons(artifact: Artifact, raw: RawFeatures, x: np.ndarray, peers: str) -> Callable[[int, int], list[str]]:
    """The reasons of rows [start, stop) of `x` as `reason_json` gives them: how far each of the model's most
    important feature groups moves their scores (Trained.contributions), in words."""
    spec, trained = artifact.spec, artifact.trained
    names = [trained.group_names[g] for g in trained.explained_groups()]
    missing = np.full(len(raw.ids), np.nan)
    columns = [
        raw.categories.get(name, [None] * len(raw.ids))
        if name in spec.categories
        else np.asarray(raw.numbers.get(name, missing), dtype=float)
        for name in names
    ]
    describes = [spec.describe.get(name, {}) for name in names]
    medians = [trained.positive_medians.get(name) for name in names]
    texts = _Texts(names, columns, describes, medians, peers)

    def reasons(start: int, stop: int) -> list[str]:
        with threadpool_limits(limits=1), _phase("explain"):
            _groups, contributions = trained.contributions(x[start:stop])
        with _phase("reasons"):
            return reason_json(contributions, names, texts, start)

    return reasons


def _rule_reasons(scores: Any, raw: RawFeatures, size: int) -> Callable[[int, int], list[str]]:
    names = list(scores.features)
    medians = [float(np.nanmedian(raw.numbers[name])) if size else 0.0 for name in names]
    columns = [np.asarray(raw.numbers[name], dtype=float) for name in names]
    describes = [raw.describe.get(name, {}) for name in names]
    texts = _Texts(names, columns, describes, medians, "peers")

    def reasons(start: int, stop: int) -> list[str]:
        with _phase("reasons"):
            return reason_json(scores.contributions[start:stop], names, texts, start)

    return reasons


def _details(kind: str, raw: RawFeatures, settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    return qualification(raw, settings) if ENTITY_OF_KIND[ScoreKind(kind)] == ScoredEntity.ACCOUNT else None


def _describe(spec: FeatureSpec, raw: RawFeatures, name: str, row: int) -> tuple[dict[str, Any], float]:
    if name in spec.categories:
        category = raw.categories.get(name, [None] * len(raw.ids))[row]
        return {**spec.describe.get(name, {}), "value": category or "unknown"}, 0.0
    numbers = raw.numbers.get(name)
    value = float(numbers[row]) if numbers is not None else float("nan")
    return spec.describe.get(name, {}), value


def scoring_history(
    *, tenant: Tenant, kinds: Iterable[str], now: datetime, accounts: Sequence[int] | None = None,
    users: Sequence[int] | None = None,
) -> History:  # fmt: skip
    """What scoring `kinds` at `now` reads, loaded once: the rollup levels and properties those kinds use,
    from the longest window back. With `accounts` / `users`, only those entities (incremental rescoring):
    their features are the same as with the whole tenant loaded; percentiles still rank against every score."""
    kinds = set(kinds)
    levels: set[str] = set()
    entity_types: set[str] = {EntityType.MEMBERSHIP}  # roles: seats, users' best role, champions
    if kinds & {ScoreKind.CONVERSION, ScoreKind.CHURN}:
        levels.add("account")  # and the active pairs (seats), unless champions load the pair rollups anyway
        entity_types.add(EntityType.ACCOUNT)
    if ScoreKind.HEALTH in kinds:
        levels.add("user")
        entity_types.add(EntityType.USER)
    if ScoreKind.CHAMPION in kinds:
        levels.add("pair")
    scope = None if accounts is None and users is None else Scope(tuple(accounts or ()), tuple(users or ()))
    return load_history(
        tenant,
        since=(midnight(now) - timedelta(days=SCORING_LOOKBACK_DAYS)).date(),
        levels=[level for level in LEVELS if level in levels],
        pairs_since=(midnight(now) - timedelta(days=PAIR_LOOKBACK_DAYS)).date(),
        active_pairs_at=now if "account" in levels and "pair" not in levels else None,
        live_at=now,
        entity_types=[entity_type for entity_type in ENTITY_TYPES if entity_type in entity_types],
        property_keys=MEMBERSHIP_KEYS,
        scope=scope,
    )


def scores_refresh(
    *, tenant: Tenant, kind: str, now: datetime, entity_ids: Iterable[int] | None = None,
    history: History | None = None, settings: dict[str, Any] | None = None,
) -> int:  # fmt: skip
    """(Re)score every entity of `kind`, or only `entity_ids`; returns how many scores were written. `history`:
    one loaded by `scoring_history` for this kind (and these entities), to share between kinds; `settings`: the
    tenant's `working_settings`, read once for several kinds."""
    _computed, write = _scored(
        tenant=tenant, kind=kind, now=now, entity_ids=entity_ids, history=history, settings=settings
    )
    return write()


def _scored(
    *, tenant: Tenant, kind: str, now: datetime, entity_ids: Iterable[int] | None, history: History | None,
    settings: dict[str, Any] | None = None,
) -> tuple[Computed | None, Callable[..., int]]:  # fmt: skip
    """Compute the scores of `kind` (see scores_refresh): (them, what writes them and says how many — given their
    reasons' JSON texts chunk by chunk, or computing those itself). Champions compute as they write: (None, that)."""
    if kind == ScoreKind.CHAMPION:
        return None, partial(champions_refresh, tenant=tenant, now=now, account_ids=entity_ids, history=history,
                             settings=settings)  # fmt: skip
    settings = working_settings(tenant=tenant) if settings is None else settings
    full = entity_ids is None
    candidates = _candidates(tenant, kind) if full else sorted(set(entity_ids or ()))
    if history is None:
        with _phase("load_history"):
            is_user = kind == ScoreKind.HEALTH
            history = scoring_history(
                tenant=tenant, kinds=(kind,), now=now,
                accounts=None if full or is_user else candidates, users=None if full or not is_user else candidates,
            )  # fmt: skip
    # Every user has a health score, even one first seen today (training rows need history; a score does not).
    ids = candidates if kind == ScoreKind.HEALTH else eligible(history, settings, kind, now, candidates)
    computed = _compute(tenant, kind, history, settings, ids, now)

    def write(texts: Iterable[list[str]] | None = None, stored: Future[Stored] | None = None) -> int:
        with _phase("write"):
            entity_type = ENTITY_OF_KIND[ScoreKind(kind)]
            return _write(tenant, kind, entity_type, computed, now, candidates=candidates, full=full, texts=texts,
                          stored=None if stored is None else stored.result())  # fmt: skip

    return computed, write


def scores_refresh_kinds(*, tenant: Tenant, kinds: Sequence[str], now: datetime, history: History) -> dict[str, int]:
    """Every entity of each of `kinds` over one loaded history; scores written per kind. The kinds are computed
    side by side, each on a thread of its own (numpy lets go of the GIL in its loops over whole columns, so two
    kinds' features take little more than the longer one), and each kind's write (mostly PostgreSQL's work) runs
    on a connection of its own as soon as its scores are known, while the reasons of its next rows are computed.
    The kinds' writes touch different rows, so they run side by side — except champions, computed as they are
    written (they read the stored health scores): they start after every write before them. A kind whose
    computing fails stores none of its scores; the others are stored, then the error is raised. Unless the caller
    holds a transaction, whose rows other connections could not see: then one kind after the other, on it."""
    settings = working_settings(tenant=tenant)
    if connection.in_atomic_block:
        return {kind: scores_refresh(tenant=tenant, kind=kind, now=now, history=history, settings=settings)
                for kind in kinds}  # fmt: skip
    scored: dict[str, Future[Future[int]]] = {}
    writes: dict[str, Future[int]] = {}
    # BLAS and OpenMP pools limited once around the threads: each thread's own limit then saves and restores the
    # same setting, whatever order they end in.
    with (
        threadpool_limits(limits=1),
        ThreadPoolExecutor(max_workers=2 * max(len(kinds), 1)) as writers,
        ThreadPoolExecutor(max_workers=max(len(kinds), 1)) as computers,
    ):
        for kind in kinds:
            if kind == ScoreKind.CHAMPION:
                _none, write = _scored(tenant=tenant, kind=kind, now=now, entity_ids=None, history=history,
                                       settings=settings)  # fmt: skip
                writes[kind] = _on_a_thread(writers, partial(_after, list(scored.values()), write))
            else:
                scored[kind] = _on_a_thread(computers, partial(_score_and_store, writers, tenant, kind, now, history,
                                                               settings))  # fmt: skip
        wait(scored.values())
        writes |= {kind: future.result() for kind, future in scored.items() if not future.exception()}
        wait(writes.values())
    for future in scored.values():
        future.result()  # a kind that failed to compute: its error, after the others are stored
    return {kind: writes[kind].result() for kind in kinds}


def _score_and_store(writers: ThreadPoolExecutor, tenant: Tenant, kind: str, now: datetime, history: History,
                     settings: dict[str, Any]) -> Future[int]:  # fmt: skip
    """Compute every score of `kind`, start their write on a thread of `writers` and feed it their reasons a chunk
    at a time; the write's future."""
    # The stored scores (history rows are decided against them) are read while the kind is computed.
    stored = _on_a_thread(writers, partial(_stored, tenant, kind, None))
    computed, write = _scored(tenant=tenant, kind=kind, now=now, entity_ids=None, history=history, settings=settings)
    if computed is None:  # champions compute as they write: not for this thread
        raise ValueError(f"{kind} scores are computed as they are written")
    feed: SimpleQueue[list[str] | object] = SimpleQueue()
    written = _on_a_thread(writers, partial(write, texts=_fed(feed), stored=stored))
    _feed(feed, reason_texts(computed))
    return written


def _after(before: Sequence[Future[Future[int]]], work: Callable[[], int]) -> int:
    """`work` once the kinds `before` are computed and written (or have failed)."""
    wait(before)
    wait([future.result() for future in before if not future.exception()])
    return work()


_FED = object()  # the feed's end: every chunk is in
_FAILED = object()  # the feed's end: computing a chunk failed


def _feed(feed: SimpleQueue[list[str] | object], chunks: Iterable[list[str]]) -> None:
    try:
        for chunk in chunks:
            feed.put(chunk)
    except BaseException:
        feed.put(_FAILED)  # the writer rolls back rather than wait for chunks that never come
        raise
    feed.put(_FED)


def _fed(feed: SimpleQueue[list[str] | object]) -> Iterator[list[str]]:
    while (chunk := feed.get()) is not _FED:
        if chunk is _FAILED:
            raise RuntimeError("the scores' reasons were not all computed: none of this kind's scores are stored")
        yield chunk  # type: ignore[misc]


def reason_texts(computed: Computed) -> Iterator[list[str]]:
    """The reasons of each score as JSON, escaped for COPY, WRITE_BATCH scores at a time."""
    size = WRITE_BATCH
    for start in range(0, len(computed.ids), size):
        yield computed.reasons(start, min(start + size, len(computed.ids)))


def _on_a_thread[T](pool: ThreadPoolExecutor, work: Callable[[], T]) -> Future[T]:
    """`work` on a thread of `pool`, in a copy of the caller's context (tenant, phase timings), on a connection
    of its own that closes after it."""
    return pool.submit(contextvars.copy_context().run, _on_own_connection, work)


def _on_own_connection[T](work: Callable[[], T]) -> T:
    try:
        return work()
    finally:
        connection.close()


def _id_array(ids: Iterable[int]) -> str:
    """A bigint[] parameter as PostgreSQL's array text: much cheaper for both sides than ARRAY[...] of 100,000."""
    return "{" + ",".join(map(str, ids)) + "}"


@dataclass
class Stored:
    """The stored scores of one kind, as arrays: what ranking new scores among them and deciding on ScoreHistory
    rows need."""

    ids: np.ndarray
    values: np.ndarray
    history_values: np.ndarray  # of each score's latest history row; NaN: none recorded
    history_grades: np.ndarray  # -1: none recorded


def _stored(tenant: Tenant, kind: str, candidates: Sequence[int] | None) -> Stored:
    where, params = "", {"kind": kind, "entity_type": ENTITY_OF_KIND[ScoreKind(kind)]}
    if candidates is not None:  # entity_type too, so the unique index finds them
        where = " AND entity_type = %(entity_type)s AND entity_id = ANY(%(ids)s::bigint[])"
        params["ids"] = _id_array(candidates)
    rows = Score.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(entity_id)), array_send(array_agg(value)), "  # noqa: S608 - constant
        "array_send(array_agg(COALESCE(history_value, 'NaN'))), "
        "array_send(array_agg(COALESCE(history_grade, -1)::int4)) "
        f"FROM scoring_score WHERE tenant_id = %(tenant)s AND kind = %(kind)s{where}",
        params,
    )
    row = rows[0] if rows else (None,) * 4
    return Stored(ids=pg_array(row[0]), values=pg_array(row[1], "f8"), history_values=pg_array(row[2], "f8"),
                  history_grades=pg_array(row[3], "i4"))  # fmt: skip


def history_moves(
    ids: np.ndarray, values: np.ndarray, grades: np.ndarray, stored: Stored
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which new scores get a ScoreHistory row — new ones, and those HISTORY_MIN_CHANGE or more from their latest
    row's value or of another grade — and each score's latest row after that: (moved, its value, its grade)."""
    slots = entity_slots(ids, stored.ids)
    known = slots >= 0
    at = np.maximum(slots, 0)
    recorded_value = np.where(known, stored.history_values[at] if len(stored.ids) else np.nan, np.nan)
    recorded_grade = np.where(known, stored.history_grades[at] if len(stored.ids) else -1, -1)
    with np.errstate(invalid="ignore"):  # NaN: none recorded, so moved
        moved = ~(np.abs(recorded_value - values) < HISTORY_MIN_CHANGE) | (recorded_grade != grades)
    return moved, np.where(moved, values, recorded_value), np.where(moved, grades, recorded_grade)


def _ranks_among_stored(tenant: Tenant, kind: str, ids: np.ndarray, values: np.ndarray, stored: Stored) -> np.ndarray:
    """Percentiles of new scores among the stored scores of every other entity plus the new ones (`percentiles`
    of that population), counted in the database: how many stored scores lie below each new one, in one pass
    (width_bucket finds each stored score's place among the new ones), instead of fetching them all."""
    if not len(values):
        return np.zeros(0, dtype=int)
    # count(value <= v) == count(value < the next float above v): width_bucket's buckets include their lower bound
    bounds = np.unique(np.nextafter(values, np.inf))
    rows = Score.objects.sql(
        tenant,
        "SELECT width_bucket(value, %(bounds)s::float8[]), count(*) FROM scoring_score "
        "WHERE tenant_id = %(tenant)s AND kind = %(kind)s GROUP BY 1",
        {"kind": kind, "bounds": "{" + ",".join(map(repr, bounds.tolist())) + "}"},
    )
    per_bucket = np.zeros(len(bounds) + 1, dtype=np.int64)
    for bucket, count in rows:
        per_bucket[bucket] = count
    below = np.cumsum(per_bucket)[:-1]  # below[n]: stored scores under bounds[n]
    stored_at_or_below = below[np.searchsorted(bounds, np.nextafter(values, np.inf))]
    slots = entity_slots(ids, stored.ids)
    replaced = stored.values[slots[slots >= 0]]  # the stored scores the new ones replace
    size = int(per_bucket.sum()) - len(replaced) + len(values)
    at_or_below = (
        stored_at_or_below
        - np.searchsorted(np.sort(replaced), values, side="right")
        + np.searchsorted(np.sort(values), values, side="right")
    )  # fmt: skip
    return np.clip(np.round(100.0 * at_or_below / size), 0, 100).astype(int)


# Scores are upserted through the COPY door: each row's reasons and details are parsed once, as jsonb, instead of
# the whole batch travelling as one JSON document (a 40 MB statement parsed as JSON, then each field again).
SCORE_COLUMNS = ("kind", "entity_type", "entity_id", "value", "percentile", "grade", "reasons", "model_version",
                 "rule_based", "computed_at", "details", "history_value", "history_grade")  # fmt: skip
SCORE_KEY = ("kind", "entity_type", "entity_id")
SCORE_UPDATED = tuple(column for column in SCORE_COLUMNS if column not in SCORE_KEY)
SCORE_HISTORY_COLUMNS = ("kind", "entity_type", "entity_id", "value", "grade", "model_version", "computed_at")


def _write(tenant: Tenant, kind: str, entity_type: str, computed: Computed, now: datetime, *,
           candidates: Sequence[int], full: bool, texts: Iterable[list[str]] | None = None,
           stored: Stored | None = None) -> int:  # fmt: skip
    """Store the scores (upsert), drop those of entities no longer scored, append ScoreHistory where a score is
    new, or moved by HISTORY_MIN_CHANGE from its latest history row, or of another grade (`history_moves`).
    `texts`: the reasons as `reason_texts` gives them (computed here if None), taken a chunk at a time — each chunk
    is stored as it comes. `stored`: the kind's stored scores (`_stored`; read here if None). Plain SQL: an ORM
    object per score cost more than computing it."""
    ids = np.asarray(computed.ids, dtype=np.int64)
    values = np.asarray(computed.values, dtype=float)
    if not np.isfinite(values).all():  # a model or rule bug: write nothing rather than a NaN score
        raise ValueError(f"{kind}: {int((~np.isfinite(values)).sum())} scores are not finite numbers")
    with _phase("write: read stored"):
        stored = _stored(tenant, kind, None if full else candidates) if stored is None else stored
        ranks = percentiles(values, values) if full else _ranks_among_stored(tenant, kind, ids, values, stored)
    grade = grades(ranks)
    details = _json_texts(computed.details if computed.details is not None else [{}] * len(ids))
    moved, history_value, history_grade = history_moves(ids, values, grade, stored)
    stale = np.setdiff1d(stored.ids, ids)
    id_list, value_list, rank_list, grade_list = ids.tolist(), values.tolist(), ranks.tolist(), grade.tolist()
    moved_list = moved.tolist()
    recorded = [f"{value!r}\t{grade}" for value, grade in zip(history_value.tolist(), history_grade.tolist(),
                                                               strict=True)]  # fmt: skip
    # COPY lines made here, not by `copy`: of the values only the JSON texts can hold a character COPY escapes
    # (a backslash: JSON has no raw tab or newline), so the rest skip `copy_text` (~0.3 s a rescore).
    head = "\t".join(map(copy_text, (kind, entity_type))) + "\t"
    tail = "\t".join(map(copy_text, (computed.model_version, computed.rule_based, now.isoformat())))
    written = 0
    with transaction.atomic():
        with _phase("write: delete"):
            # The stored scores of entities no longer scored, as read before computing (a full rescore's used to be
            # every score of the kind not among the 62,000 new ones: 0.3 s on the critical path, and a score an
            # incremental rescore wrote meanwhile for an account created since went with them).
            if len(stale):
                Score.objects.sql(
                    tenant,
                    "DELETE FROM scoring_score WHERE tenant_id = %(tenant)s AND kind = %(kind)s "
                    "AND entity_type = %(entity_type)s AND entity_id = ANY(%(ids)s::bigint[])",
                    {"kind": kind, "entity_type": entity_type, "ids": _id_array(stale.tolist())},
                )
        for reasons in reason_texts(computed) if texts is None else texts:
            start, written = written, written + len(reasons)
            with _phase("write: encode"):
                lines = [f"{head}{id_list[n]}\t{value_list[n]!r}\t{rank_list[n]}\t{grade_list[n]}\t{reason}\t{tail}"
                         f"\t{details[n]}\t{recorded[n]}" for n, reason in enumerate(reasons, start)]  # fmt: skip
            # Each new or moved score's history row is copied from it as written, in the same statement.
            moved_ids = [id_list[n] for n in range(start, written) if moved_list[n]]
            also = AlsoInto(ScoreHistory._meta.db_table, SCORE_HISTORY_COLUMNS, "entity_id", moved_ids)
            with _phase("write: upsert"):
                Score.objects.copy_lines(tenant, SCORE_COLUMNS, lines, conflict=SCORE_KEY, update=SCORE_UPDATED,
                                         also=also if moved_ids else None)  # fmt: skip
        if written != len(id_list):  # a bug upstream: rather no scores than some
            raise RuntimeError(f"{kind}: reasons for {written} of {len(id_list)} scores")
    return written


def _json_texts(values: Sequence[Any]) -> list[str]:
    """Each value as `copy_json` text, encoded once per object: many accounts share one details dict
    (qualification)."""
    texts: dict[int, str] = {}
    result = []
    for value in values:
        text = texts.get(id(value))  # the objects outlive this loop, so an id stands for one object
        if text is None:
            text = texts[id(value)] = copy_json(value)
        result.append(text)
    return result


# --- champions ------------------------------------------------------------------------------------------


def champions_refresh(
    *, tenant: Tenant, now: datetime, account_ids: Iterable[int] | None = None, history: History | None = None,
    settings: dict[str, Any] | None = None,
) -> int:  # fmt: skip
    """Whom to call inside an account: share of the account's key activity (30 days), role weight, health."""
    settings = working_settings(tenant=tenant) if settings is None else settings
    full = account_ids is None
    wanted = None if full else sorted(set(account_ids or ()))
    if history is None:
        with _phase("load_history"):
            history = scoring_history(tenant=tenant, kinds=(ScoreKind.CHAMPION,), now=now, accounts=wanted)
    began = time.perf_counter()
    key_events = key_events_of(history, settings["key_events"])
    at = now + timedelta(microseconds=1)
    everyone = history.memberships
    members = np.flatnonzero(everyone.active(at))
    if wanted is not None:
        members = members[np.isin(everyone.account[members], wanted)]
        wanted = np.unique(everyone.account[members]).tolist()  # accounts without members keep their scores
    members = members[np.lexsort((everyone.pk[members], everyone.account[members]))]  # by account, then id
    pks, accounts, users = everyone.pk[members], everyone.account[members], everyone.user[members]
    activity = team_activity(history, pks, at, key_events)
    weights = settings["champion"]["weights"]
    role_weights = settings["champion"]["role_weights"]
    health = _health_of(tenant, users)
    total_weight = sum(weights.values()) or 1.0
    mine = activity.counts.sum(axis=1)
    team = activity.account_totals
    share = np.where(team > 0, mine / np.where(team > 0, team, 1.0), 0.0)
    role_names = property_column(history, EntityType.MEMBERSHIP, "role", pks, at).tolist()
    role = np.array([float(role_weights.get(str(name or "").strip().lower(), 0.0)) for name in role_names])
    parts = {"share": share, "role": role, "health": health}
    values = _float_sum([weights[key] * parts[key] for key in parts]) / total_weight
    # The team's count of each member's top key event, for "46% of the team's reports".
    account_slots = np.unique(accounts, return_inverse=True)[1]
    team_events = np.zeros((int(account_slots.max()) + 1 if len(pks) else 0, len(activity.events)))
    np.add.at(team_events, account_slots, activity.counts)
    contributions = np.column_stack(
        [weights["role"] * (role - 0.5), weights["share"] * (share - 0.25), weights["health"] * (health - 0.5)]
    ) / total_weight if len(pks) else np.zeros((0, 3))  # fmt: skip
    names = ["role", "share", "health"]
    texts = _champion_texts(role_names, health, activity, team_events, account_slots)

    encoded: dict[str, str] = {}

    def fragments(rows: np.ndarray, slot: int) -> list[str]:
        column = texts[slot]
        return [encoded.get(text) or encoded.setdefault(text, copy_json(text))
                for text in (column[row] for row in rows.tolist())]  # fmt: skip

    def reasons(start: int, stop: int) -> list[str]:
        return reason_json(contributions[start:stop], names, fragments, start)

    computed = Computed(pks.tolist(), values, reasons, None, True)  # a transparent formula, never a model
    collected = _phases.get()
    if collected is not None:
        collected["champion scores"] = collected.get("champion scores", 0.0) + time.perf_counter() - began
    membership_candidates = computed.ids if full else _memberships_of(tenant, wanted or [])
    with _phase("write"):
        return _write(tenant, ScoreKind.CHAMPION, ScoredEntity.MEMBERSHIP, computed, now,
                      candidates=membership_candidates, full=full)  # fmt: skip


def _champion_texts(
    role_names: list[Any], health: np.ndarray, activity: TeamActivity, team_events: np.ndarray,
    account_slots: np.ndarray,
) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """Per membership, the texts of its three reasons: role, share of the team's top key event, health."""
    role_texts: dict[Any, str] = {}
    roles = []
    for name in role_names:
        key = name if isinstance(name, str) or name is None else repr(name)
        if key not in role_texts:
            role_texts[key] = f"{str(name).strip() if name else 'no role'} in this account"
        roles.append(role_texts[key])
    healths = [f"{percent}% likely to be active in the coming weeks" for percent in np.rint(health * 100).astype(int)]
    shares = ["no key activity in this account in 30 days"] * len(role_names)
    counts = activity.counts
    if counts.shape[1]:
        rows = np.flatnonzero(counts.any(axis=1))
        top = np.argmax(counts[rows], axis=1)
        top_count, team_count = counts[rows, top], team_events[account_slots[rows], top]
        percent = np.where(team_count != 0, np.rint(100 * top_count / np.where(team_count != 0, team_count, 1)), 0)
        for row, event, value in zip(rows.tolist(), top.tolist(), percent.astype(int).tolist(), strict=True):
            shares[row] = f"{value}% of the team's {activity.events[event]}"
    return roles, shares, healths


def _float_sum(terms: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise `sum(terms)` exactly as Python adds floats (Neumaier's compensated sum, Python 3.12+)."""
    total = np.asarray(terms[0], dtype=float)
    compensation = np.zeros(total.shape)
    for term in terms[1:]:
        step = total + term
        compensation += np.where(np.abs(total) >= np.abs(term), (total - step) + term, (term - step) + total)
        total = step
    return np.where((compensation != 0) & np.isfinite(compensation), total + compensation, total)


def _health_of(tenant: Tenant, users: np.ndarray) -> np.ndarray:
    """The stored health score of each user (0.5 where there is none)."""
    if not len(users):
        return np.zeros(0)
    rows = Score.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(entity_id)), array_send(array_agg(value)) FROM scoring_score "
        "WHERE tenant_id = %(tenant)s AND kind = %(kind)s AND entity_type = %(user)s "
        "AND entity_id = ANY(%(ids)s::bigint[])",
        {"kind": ScoreKind.HEALTH, "user": ScoredEntity.USER, "ids": _id_array(np.unique(users).tolist())},
    )
    ids, values = (pg_array(rows[0][0]), pg_array(rows[0][1], "f8")) if rows else (np.zeros(0), np.zeros(0))
    slots = entity_slots(users, ids.astype(np.int64))
    return np.where(slots >= 0, values[np.maximum(slots, 0)] if len(values) else 0.5, 0.5)


def _memberships_of(tenant: Tenant, accounts: Sequence[int]) -> list[int]:
    return list(Membership.objects.for_tenant(tenant).filter(account_id__in=accounts).values_list("pk", flat=True))


# --- what changed -> what to rescore -------------------------------------------------------------------------


def rescore_changed(tenant: Tenant, entities: list[tuple[str, int]], now: datetime) -> None:
    """Processor of dirty marks: rescore the accounts and users that changed, and their champions. Loads only
    what those entities need (their rollups, properties and memberships)."""
    accounts = sorted({pk for entity_type, pk in entities if entity_type == EntityType.ACCOUNT})
    users = sorted({pk for entity_type, pk in entities if entity_type == EntityType.USER})
    settings = working_settings(tenant=tenant)  # once a round: every kind reads the same
    if users:
        scores_refresh(tenant=tenant, kind=ScoreKind.HEALTH, now=now, entity_ids=users, settings=settings)
        accounts = sorted(
            set(accounts)
            | set(
                Membership.objects.for_tenant(tenant).filter(end_user_id__in=users).values_list("account_id", flat=True)
            )
        )
    if accounts:
        with _phase("load_history"):
            history = scoring_history(
                tenant=tenant, kinds=(ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION), now=now,
                accounts=accounts,
            )  # fmt: skip
        for kind in (ScoreKind.CONVERSION, ScoreKind.CHURN):
            scores_refresh(tenant=tenant, kind=kind, now=now, entity_ids=accounts, history=history, settings=settings)
        champions_refresh(tenant=tenant, now=now, account_ids=accounts, history=history, settings=settings)


def scores_refresh_all(*, tenant: Tenant, now: datetime) -> dict[str, int]:
    """Every kind, every entity (hourly): health first, since champions read it. One load for all kinds."""
    kinds = (ScoreKind.HEALTH, ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.CHAMPION)
    with _phase("load_history"):
        history = scoring_history(tenant=tenant, kinds=kinds, now=now)
    return scores_refresh_kinds(tenant=tenant, kinds=kinds, now=now, history=history)


# --- sales reps' quick actions on the PQL list ------------------------------------------------------------------------

LEAD_COOLDOWN_DAYS = {LeadOutcome.DONE: 14, LeadOutcome.DISQUALIFIED: 30}


class DispositionInvalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def lead_disposition_set(
    *, tenant: Tenant, account_id: int, outcome: str, reason: str, user: Any, now: datetime
) -> LeadDisposition:
    """Mark a PQA done or disqualified: off the list for the outcome's cooldown. Raises Account.DoesNotExist for an
    account not of this tenant (the caller answers 404)."""
    from accounts.models import Account

    account = Account.objects.for_tenant(tenant).get(pk=account_id)
    errors: dict[str, str] = {}
    if outcome not in LeadOutcome.values:
        errors["outcome"] = f"one of {', '.join(LeadOutcome.values)}"
    reason = (reason or "").strip()
    if outcome == LeadOutcome.DISQUALIFIED and not reason:
        errors["reason"] = "say why it is disqualified (the team sees it)"
    if len(reason) > 500:
        errors["reason"] = "at most 500 characters"
    if errors:
        raise DispositionInvalid(errors)
    return LeadDisposition.objects.for_tenant(tenant).create(
        account=account, outcome=outcome, reason=reason, created_by=user if getattr(user, "pk", None) else None,
        hidden_until=now + timedelta(days=LEAD_COOLDOWN_DAYS[LeadOutcome(outcome)]), created_at=now,
    )  # fmt: skip
