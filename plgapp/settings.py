"""The one settings module. Everything comes from environment variables (12-factor); see README.

Required in every environment: SECRET_KEY, DATABASE_URL, REDIS_URL. The Makefile provides all three
for local runs (embedded services and a per-checkout key in .local/); production must set them.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from plgapp.logconfig import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ImproperlyConfigured(f"Set the {name} environment variable (see README: Configuration).")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_str("SECRET_KEY")
if not DEBUG and len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "plgapp",
    "accounts",
    "signals",
    "scoring",
    "playbooks",
    "integrations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "plgapp.middleware.RequestIdMiddleware",
    "plgapp.middleware.ReleaseRenderedResponseMiddleware",  # DRF's answers freed when sent, not by the collector
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "plgapp.middleware.DatabaseContextMiddleware",  # row-level security: no tenant before and after a request
    "plgapp.middleware.DatabaseUnavailableMiddleware",  # last: its process_exception sees the view's error first
]

ROOT_URLCONF = "plgapp.urls"
WSGI_APPLICATION = "plgapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "plgapp.context_processors.tenant_navigation",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------------------

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# Django's PostgreSQL backend with a health check that needs no round trip on a healthy connection.
DATABASES["default"]["ENGINE"] = "plgapp.postgres"
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))
DATABASES["default"]["OPTIONS"].setdefault("application_name", os.environ.get("DB_APPLICATION_NAME", "plg"))
# The application connects as DATABASE_URL's role, which must not own the tables (row-level security applies to
# it: plgapp/rls.py). Migrations connect as the owner, DATABASE_OWNER_URL (plgapp's `migrate`); unset, the same
# role does both and `manage.py check --deploy` warns when that role escapes row-level security.
DATABASE_OWNER = dj_database_url.parse(os.environ.get("DATABASE_OWNER_URL") or env_str("DATABASE_URL"))
DATABASE_APP_ROLE = DATABASES["default"]["USER"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# The test suite's processes (pytest-xdist's gw0, gw1, ...) share one Redis server: each takes a database of its own,
# REDIS_URL's and the ones after it, so that one's Celery queues, rate limits and flags are not another's. What a
# test starts (workers, servers) inherits the variable, and so the same database.
if _test_process := os.environ.get("PYTEST_XDIST_WORKER"):
    _redis = urlsplit(REDIS_URL)
    _database = int(_redis.path.strip("/") or 0) + int(_test_process.removeprefix("gw"))
    REDIS_URL = _redis._replace(path=f"/{_database}").geturl()
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "plg"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# --- Celery (plgapp/celery.py reads every CELERY_* setting) -----------------------------------------

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
# Modules that register extra playbook action types when the app loads (integrations register their own; tests
# and self-hosters' plug-ins name theirs here), e.g. PLAYBOOK_ACTION_MODULES=mycompany.actions
PLAYBOOK_ACTION_MODULES = env_list("PLAYBOOK_ACTION_MODULES", "")
# First retry delay of a failed action (doubling per attempt, with jitter; never before a Retry-After).
PLAYBOOK_BACKOFF_BASE_SECONDS = float(os.environ.get("PLAYBOOK_BACKOFF_BASE_SECONDS", "15"))
# How long a claimed action run belongs to its worker; past it, the sweep recovers the run (a worker died mid-call).
# Longer than any provider call (INTEGRATION_TIMEOUT_SECONDS).
PLAYBOOK_LEASE_SECONDS = env_int("PLAYBOOK_LEASE_SECONDS", 120)
# A non-idempotent call that got no answer (timeout) is retried no sooner than this, and the retry first asks the
# provider whether the first one landed (confirm): long enough for a hung request to have been processed.
PLAYBOOK_CONFIRM_DELAY_SECONDS = env_int("PLAYBOOK_CONFIRM_DELAY_SECONDS", 60)
# Action runs wait in Redis until due and are handed to the `actions` queue while it holds fewer than this many
# tasks, one tenant at a time in turn (playbooks/dispatch.py): a deep backlog of one tenant never delays another.
PLAYBOOK_ACTIONS_QUEUE_DEPTH = env_int("PLAYBOOK_ACTIONS_QUEUE_DEPTH", 20)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)

# --- Integrations (DESIGN §11) ----------------------------------------------------------------------

# Base URLs of the providers' APIs: tests, the demo and on-prem proxies point them elsewhere.
SLACK_API_URL = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
HUBSPOT_API_URL = os.environ.get("HUBSPOT_API_URL", "https://api.hubapi.com")
# Where people reach this installation: links in messages ("open the account") start with it.
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://localhost:8000").rstrip("/")
SLACK_MESSAGES_PER_SECOND_PER_CHANNEL = 1  # Slack's posting limit
HUBSPOT_REQUESTS_PER_10_SECONDS = env_int("HUBSPOT_REQUESTS_PER_10_SECONDS", 100)  # per connection (app limits vary)
HUBSPOT_SEARCHES_PER_SECOND = env_int("HUBSPOT_SEARCHES_PER_SECOND", 5)
INTEGRATION_TIMEOUT_SECONDS = env_int("INTEGRATION_TIMEOUT_SECONDS", 10)  # every provider call has one
# OAuth apps (connect Slack / HubSpot with a button). Without a client id the flow is off: paste a token instead.
SLACK_CLIENT_ID = os.environ.get("SLACK_CLIENT_ID", "")
SLACK_CLIENT_SECRET = os.environ.get("SLACK_CLIENT_SECRET", "")
SLACK_AUTHORIZE_URL = os.environ.get("SLACK_AUTHORIZE_URL", "https://slack.com/oauth/v2/authorize")
SLACK_BOT_SCOPES = os.environ.get("SLACK_BOT_SCOPES", "chat:write,channels:read,groups:read")
HUBSPOT_CLIENT_ID = os.environ.get("HUBSPOT_CLIENT_ID", "")
HUBSPOT_CLIENT_SECRET = os.environ.get("HUBSPOT_CLIENT_SECRET", "")
HUBSPOT_AUTHORIZE_URL = os.environ.get("HUBSPOT_AUTHORIZE_URL", "https://app.hubspot.com/oauth/authorize")
HUBSPOT_SCOPES = os.environ.get(
    "HUBSPOT_SCOPES",
    "crm.objects.contacts.read crm.objects.contacts.write crm.objects.companies.read crm.objects.companies.write "
    "crm.lists.read crm.lists.write crm.objects.owners.read",
)
# Fernet keys that encrypt connection credentials at rest, newest first (rotate by prepending a new key);
# unset: one key derived from SECRET_KEY.
CREDENTIALS_KEYS = env_list("CREDENTIALS_KEYS", "")

# --- Ingestion ------------------------------------------------------------------------------------

INGEST_RATE_LIMIT_PER_MINUTE = env_int("INGEST_RATE_LIMIT_PER_MINUTE", 6000)  # per key; a tenant may override
INGEST_MAX_CALL_BYTES = 32 * 1024
INGEST_MAX_BATCH_BYTES = 500 * 1024
INGEST_MAX_BATCH_CALLS = 1000

# --- Auth, sessions, security --------------------------------------------------------------------

AUTH_USER_MODEL = "plgapp.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Failed sign-ins allowed per email and per client address within LOGIN_LOCK_SECONDS; then refused until it ends.
LOGIN_FAILURES_PER_EMAIL = env_int("LOGIN_FAILURES_PER_EMAIL", 5)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 30)
LOGIN_LOCK_SECONDS = env_int("LOGIN_LOCK_SECONDS", 15 * 60)
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Cookies are HTTPS-only unless explicitly turned off for plain-http local runs (make demo / make run).
SECURE_COOKIES = env_bool("SECURE_COOKIES", default=True)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
if env_bool("BEHIND_HTTPS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Static files (served by WhiteNoise; nothing from a CDN) ------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / ".local" / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", default=DEBUG)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- REST API --------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "plgapp.authentication.SecretKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["plgapp.permissions.TenantRolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["plgapp.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "plgapp.pagination.CursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "plgapp.schema.PlgAutoSchema",
    "DEFAULT_METADATA_CLASS": "plgapp.api_metadata.ApiMetadata",
    "EXCEPTION_HANDLER": "plgapp.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PLG platform API",
    "DESCRIPTION": "Ingestion (journy.io- and Segment-compatible) and management API. See DESIGN §6-§7.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets whose field names (kind, entity_type, object) recur across apps with other values.
    "ENUM_NAME_OVERRIDES": {
        "ApiKeyKindEnum": "plgapp.models.KEY_KIND_CHOICES",
        "ScoreKindEnum": "scoring.models.ScoreKind",
        "AccountOrUserEnum": "signals.models.SignalEntity",  # also playbooks' object (same values and labels)
    },
}

# --- Logging ------------------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json")
LOGGING = logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)
