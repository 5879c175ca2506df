"""The one beat schedule. tests/test_celery.py checks that every entry names a registered task."""

from __future__ import annotations

from typing import Any

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "dirty-entities-sweep": {
        "task": "signals.tasks.dirty_entities_sweep",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "worker-heartbeats": {
        "task": "plgapp.tasks.heartbeats_dispatch",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}
