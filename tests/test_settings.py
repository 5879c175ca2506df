"""Settings come from the environment; production refuses to start without a secret key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def start_django(*, show: str = "DEBUG", **overrides: str | None) -> subprocess.CompletedProcess[str]:
    """Load the settings in a new process with these environment variables (None: unset); print the `show` ones."""
    env = dict(os.environ)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    printed = ", ".join(f"s.{name}" for name in show.split())
    code = f"import django; django.setup(); from django.conf import settings as s; print({printed})"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_without_secret_key_django_refuses_to_start() -> None:
    result = start_django(SECRET_KEY=None)

    assert result.returncode != 0
    assert "Set the SECRET_KEY environment variable" in result.stderr


def test_a_short_secret_key_is_refused() -> None:
    result = start_django(SECRET_KEY="short", DEBUG="false")

    assert result.returncode != 0
    assert "at least 32 characters" in result.stderr


def test_debug_is_off_unless_asked() -> None:
    assert start_django(DEBUG=None).stdout.strip() == "False"
    assert start_django(DEBUG="true").stdout.strip() == "True"


def test_each_test_process_takes_a_redis_database_of_its_own() -> None:
    # pytest-xdist's processes share one Redis server (ADR 0029): gw0 takes REDIS_URL's database, gw1 the next, and
    # everything that reads Redis in the process (cache, Celery's broker) follows.
    def shown(url: str, worker: str | None) -> str:
        result = start_django(show="REDIS_URL CELERY_BROKER_URL", REDIS_URL=url, PYTEST_XDIST_WORKER=worker,
                              CELERY_BROKER_URL=None)  # fmt: skip
        return result.stdout.strip()

    assert shown("redis://127.0.0.1:6390/5?health_check_interval=2", "gw1") == (
        "redis://127.0.0.1:6390/6?health_check_interval=2 redis://127.0.0.1:6390/6?health_check_interval=2"
    )
    assert shown("redis://127.0.0.1:6390", "gw1") == "redis://127.0.0.1:6390/1 redis://127.0.0.1:6390/1"
    assert shown("redis://127.0.0.1:6390/5", None) == "redis://127.0.0.1:6390/5 redis://127.0.0.1:6390/5"


def test_a_mistyped_boolean_is_an_error_not_a_guess() -> None:
    result = start_django(DEBUG="maybe")

    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr


def test_requests_are_atomic_and_connections_health_checked() -> None:
    database = settings.DATABASES["default"]

    assert database["ATOMIC_REQUESTS"] is True
    assert database["CONN_HEALTH_CHECKS"] is True
    assert settings.SESSION_COOKIE_HTTPONLY is True
    assert settings.X_FRAME_OPTIONS == "DENY"


def test_cookies_are_https_only_by_default() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"],
        cwd=PROJECT_ROOT, env={k: v for k, v in os.environ.items() if k != "SECURE_COOKIES"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip

    assert result.stdout.strip() == "True True"
