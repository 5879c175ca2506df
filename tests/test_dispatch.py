"""Runs wait in Redis until due and are handed to the executor in turn, tenant by tenant (playbooks/dispatch.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings

from playbooks import dispatch
from plgapp.redis_client import redis_for


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    client = redis_for(settings.REDIS_URL)
    client.delete(dispatch.TENANTS_KEY, *client.keys(dispatch.DUE_PREFIX + "*"))
    tasks: list[tuple[int, int]] = []

    def send_task(name: str, args: tuple[int, int], **options: Any) -> None:
        assert name == "playbooks.tasks.run_execute"
        tasks.append(tuple(args))  # type: ignore[arg-type]

    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", send_task)
    return tasks


def test_a_tenants_backlog_does_not_hold_up_another_tenant(sent: list[tuple[int, int]]) -> None:
    dispatch.runs_schedule(1, range(100, 150))
    dispatch.runs_schedule(2, [7])

    assert dispatch.runs_release(room=4) == 4

    assert (2, 7) in sent[:2]  # served in turn, not after tenant 1's fifty
    assert sum(1 for tenant, _ in sent if tenant == 1) == 3


def test_the_tenant_served_longest_ago_goes_first(sent: list[tuple[int, int]]) -> None:
    dispatch.runs_schedule(1, range(100, 110))
    dispatch.runs_schedule(2, range(200, 210))
    dispatch.runs_release(room=1)
    first = sent[0][0]
    dispatch.runs_release(room=1)
    assert sent[1][0] != first


def test_a_run_is_released_when_due_and_only_once(sent: list[tuple[int, int]]) -> None:
    dispatch.runs_schedule(3, [1], time.time() + 0.5)
    dispatch.runs_schedule(3, [2])

    assert dispatch.runs_release(room=10) == 1
    assert sent == [(3, 2)]
    time.sleep(0.6)
    assert dispatch.runs_release(room=10) == 1
    assert dispatch.runs_release(room=10) == 0
    assert sent == [(3, 2), (3, 1)]


def test_rescheduling_moves_a_run_rather_than_adding_a_second_one(sent: list[tuple[int, int]]) -> None:
    dispatch.runs_schedule(4, [1])
    dispatch.runs_schedule(4, [1], time.time() + 60)

    assert dispatch.runs_release(room=10) == 0


def test_nothing_is_released_while_the_actions_queue_is_full(sent: list[tuple[int, int]], settings: Any) -> None:
    queued = redis_for(settings.CELERY_BROKER_URL).llen(dispatch.ACTIONS_QUEUE)  # other tests' messages
    settings.PLAYBOOK_ACTIONS_QUEUE_DEPTH = queued
    dispatch.runs_schedule(5, [1])

    assert dispatch.runs_release() == 0
    settings.PLAYBOOK_ACTIONS_QUEUE_DEPTH = queued + 5
    assert dispatch.runs_release() == 1
