"""Issue 4's quality bars on a generated tenant (scoring.generator, fed through the ingestion service), trained by
the product's own pipeline (`model_version_start` + `model_train`).

The oracle. The generator knows each trial's hidden conversion propensity p. A training row is a trial account at
a weekly snapshot, labelled "reaches a paying stage within 30 days"; the best forecast the hidden truth allows for
it is p updated by how much of the trial's conversion window has passed without a conversion
(`GroundTruth.conversion_chance`): near p for a young trial, 0 for one past its window. The model is compared with
that oracle on exactly its own evaluation rows and labels (the newest snapshots, rebuilt here; the test checks
that they give the model's stored AUC). Trials past their window are easy for both, model and oracle, and raise
both AUCs; the comparison restricted to running trials is reported beside it (see the figures in the report).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from accounts.models import Account, EndUser, Membership
from plgapp.models import Tenant
from scoring import datasets
from scoring.generator import TRIAL_DAYS, GroundTruth, generate
from scoring.learn import expected_calibration_error, split_by_time
from scoring.models import ModelStatus, ModelVersion, Score, ScoreKind
from scoring.services import Artifact, model_train, model_version_start, working_settings
from signals.features import load_history
from signals.processing import dirty_entities_process
from tests.conftest import TenantWorld

END = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
LEARNED = (ScoreKind.CONVERSION, ScoreKind.CHURN, ScoreKind.HEALTH)


def train(tenant: Tenant, kind: str) -> ModelVersion:
    version = model_version_start(tenant=tenant, kind=kind, now=END)
    return model_train(tenant=tenant, version_id=version.pk, now=END)


@dataclass
class Evaluation:
    """The conversion model's evaluation rows: labels, its predictions, the oracle's, and which trials still run."""

    labels: np.ndarray
    model: np.ndarray
    oracle: np.ndarray
    running: np.ndarray

    def auc(self, scores: np.ndarray, rows: np.ndarray | None = None) -> float:
        rows = np.ones(len(self.labels), dtype=bool) if rows is None else rows
        return float(roc_auc_score(self.labels[rows], scores[rows]))


def conversion_evaluation(tenant: Tenant, truth: GroundTruth, version: ModelVersion) -> Evaluation:
    """Rebuild the rows `model_train` evaluated the version on (the newest of its snapshots) and score them."""
    raw = ModelVersion.objects.for_tenant(tenant).values_list("artifact", flat=True).get(pk=version.pk)
    assert raw is not None
    artifact: Artifact = pickle.loads(bytes(raw))  # noqa: S301 - written by model_train in this test
    settings = working_settings(tenant=tenant)
    history = load_history(tenant)
    horizon = datasets.horizon_days(settings, ScoreKind.CONVERSION)
    snapshots = [datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC) for day in version.report["snapshots"]]
    _fit, _calibrate, newest = split_by_time(np.array([at.toordinal() for at in snapshots]))
    external = dict(Account.objects.for_tenant(tenant).values_list("pk", "external_id"))
    labels, model, oracle, running = [], [], [], []
    for at in (at for at, is_newest in zip(snapshots, newest, strict=True) if is_newest):
        ids = datasets.eligible(history, settings, ScoreKind.CONVERSION, at, sorted(external))
        table = datasets.features(history, settings, ScoreKind.CONVERSION, at, ids, artifact.key_events)
        model.append(artifact.trained.predict(artifact.spec.matrix(table)))
        labels.append(datasets.labels(history, settings, ScoreKind.CONVERSION, at, ids))
        for pk in ids:
            account = str(external[pk])
            oracle.append(truth.conversion_chance(account, at, horizon))
            started = datetime.fromisoformat(truth.accounts[account].trial_started_at)
            running.append(at - started < timedelta(days=TRIAL_DAYS))
    return Evaluation(np.concatenate(labels), np.concatenate(model), np.array(oracle), np.array(running))


# Committed as ingestion commits (one transaction per request), not inside one test transaction: in a single
# transaction every dirty mark and last-seen update of 290k events piles up row versions nothing can prune, which
# tripled the generation and the rollups (measured 274 s + 273 s against ~80 s + ~60 s committed).
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_models_on_a_generated_tenant_meet_the_quality_bars(tenant_a: TenantWorld) -> None:
    # Given a tenant of 2,500 accounts over 120 days (about 290,000 events), processed as ingestion would
    tenant = tenant_a.tenant
    truth = generate(tenant, accounts=2500, seed=11, days=120, end=END, events_per_user_day=1.0, now=END)
    dirty_entities_process(tenant_id=tenant.pk)

    # When the three learned kinds are trained
    conversion, health, churn = (train(tenant, kind) for kind in (ScoreKind.CONVERSION, ScoreKind.HEALTH,
                                                                   ScoreKind.CHURN))  # fmt: skip

    # Then each is promoted, having beaten its rule baseline
    for version in (conversion, health, churn):
        assert version.status == ModelStatus.ACTIVE, (version.kind, version.error)
        assert version.metrics["auc"] > version.metrics["baseline_auc"], version.kind
    # ... conversion and health are calibrated
    assert conversion.metrics["ece"] <= 0.03
    assert health.metrics["ece"] <= 0.03
    # ... and conversion ranks within 0.03 of the oracle on its own evaluation rows
    rows = conversion_evaluation(tenant, truth, conversion)
    assert rows.auc(rows.model) == pytest.approx(conversion.metrics["auc"], abs=1e-3)  # the very rows of the metrics
    assert expected_calibration_error(rows.labels, rows.model) == pytest.approx(conversion.metrics["ece"], abs=1e-3)
    model, oracle = rows.auc(rows.model), rows.auc(rows.oracle)
    running_model, running_oracle = rows.auc(rows.model, rows.running), rows.auc(rows.oracle, rows.running)
    print(
        f"conversion AUC {model:.4f} vs oracle {oracle:.4f} on {len(rows.labels)} rows ({int(rows.labels.sum())} "
        f"converting); running trials only: {running_model:.4f} vs {running_oracle:.4f} on {int(rows.running.sum())} "
        f"rows; ECE {conversion.metrics['ece']}; baseline {conversion.metrics['baseline_auc']}; "
        f"health {health.metrics}; churn {churn.metrics}"
    )
    assert model >= oracle - 0.03
    # Running trials alone (no trial past its window to tell apart): measured 0.04 short of the oracle with this
    # data, so the 0.03 holds only on the whole evaluation set; this guards the measured level.
    assert running_model >= running_oracle - 0.06
    # ... and every score of every kind carries reasons
    assert Score.objects.for_tenant(tenant).exists()
    assert not Score.objects.for_tenant(tenant).filter(reasons=[]).exists()


@pytest.mark.django_db
def test_every_account_user_and_membership_of_a_generated_tenant_has_scores_with_reasons(
    tenant_a: TenantWorld,
) -> None:
    # Given a generated tenant, processed as ingestion would (rule-based scores come with the processing)
    tenant = tenant_a.tenant
    generate(tenant, accounts=200, seed=3, days=120, end=END, now=END)
    dirty_entities_process(tenant_id=tenant.pk)

    # When its models are trained: a version that beats its rule baseline becomes active and rescores its kind;
    # one that does not (too little data) leaves the transparent rule-based score in place
    versions = {kind: train(tenant, kind) for kind in LEARNED}

    # Then every trial has a conversion score, every customer a churn score, every user a health score and every
    # current membership a champion score, each from its kind's active version (else rule-based), with reasons
    assert {version.status for version in versions.values()} <= {ModelStatus.ACTIVE, ModelStatus.REJECTED}
    assert versions[ScoreKind.CONVERSION].status == ModelStatus.ACTIVE
    accounts = Account.objects.for_tenant(tenant)
    expected = {
        ScoreKind.CONVERSION: set(accounts.filter(stage="Trial").values_list("pk", flat=True)),
        ScoreKind.CHURN: set(accounts.filter(stage="Customer").values_list("pk", flat=True)),
        ScoreKind.HEALTH: set(EndUser.objects.for_tenant(tenant).values_list("pk", flat=True)),
        ScoreKind.CHAMPION: set(
            Membership.objects.for_tenant(tenant).filter(left_at__isnull=True).values_list("pk", flat=True)
        ),
    }
    scores = Score.objects.for_tenant(tenant)
    for kind, ids in expected.items():
        assert ids, kind
        assert set(scores.filter(kind=kind).values_list("entity_id", flat=True)) == ids, kind
    for kind, version in versions.items():
        source = (version.version, False) if version.status == ModelStatus.ACTIVE else (None, True)
        assert set(scores.filter(kind=kind).values_list("model_version", "rule_based")) == {source}, kind
    for score in scores:
        assert score.reasons, (score.kind, score.entity_id)
        for reason in score.reasons:
            assert set(reason) == {"feature", "text", "direction", "weight"}, reason
            assert reason["direction"] in ("+", "-")
            assert reason["feature"]
            assert reason["text"]
            assert isinstance(reason["weight"], int | float)
