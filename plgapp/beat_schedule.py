"""The one beat schedule. tests/test_celery.py checks that every entry names a registered task."""

from __future__ import annotations

import os
from typing import Any

from celery.schedules import crontab

# The minutely sweeps recover what lost messages would have done. PLG_SWEEP_SECONDS shortens them for the short
# chaos test (tests/test_chaos.py), which cannot wait minutes; production keeps a minute.
SWEEP_SECONDS = float(os.environ.get("PLG_SWEEP_SECONDS") or 60)

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "dirty-entities-sweep": {
        "task": "signals.tasks.dirty_entities_sweep",
        "schedule": SWEEP_SECONDS,
        "options": {"expires": SWEEP_SECONDS - 5},
    },
    "scores-refresh": {
        "task": "scoring.tasks.rescore_dispatch",
        "schedule": crontab(minute=7),
        "options": {"expires": 3000},
    },
    "models-retrain": {
        "task": "scoring.tasks.retrain_dispatch",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3 * 3600},
    },
    "playbooks-sweep": {
        "task": "playbooks.tasks.sweep_dispatch",
        "schedule": SWEEP_SECONDS,
        "options": {"expires": SWEEP_SECONDS - 5},
    },
    "worker-heartbeats": {
        "task": "plgapp.tasks.heartbeats_dispatch",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}
