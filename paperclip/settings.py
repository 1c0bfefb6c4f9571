"""Django settings. Every value an operator may change comes from the environment; the defaults
are documented in README.md ("Configuration") and the heartbeat tunables in heartbeat/conf.py."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from paperclip.embedded_db import ConfigurationError

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


PAPERCLIP_HOME = Path(os.environ.get("PAPERCLIP_HOME") or BASE_DIR / ".paperclip").resolve()

SECRET_KEY = os.environ.get("PAPERCLIP_SECRET_KEY") or (
    # A fixed development key would let anyone forge sessions; the local default is per home.
    "insecure-local-" + str(PAPERCLIP_HOME)
)
DEBUG = _env_bool("PAPERCLIP_DEBUG", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("PAPERCLIP_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("PAPERCLIP_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "paperclip",
    "issues",
    "heartbeat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it answers a locked-out admin login.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Refuses a locked-out client or account before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "paperclip.urls"
WSGI_APPLICATION = "paperclip.wsgi.application"
ASGI_APPLICATION = "paperclip.asgi.application"

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
            ],
        },
    },
]


def _database() -> dict:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return {
            "ENGINE": "paperclip.embedded_postgres",
            "NAME": "postgres",
            "USER": "postgres",
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:
        raise ConfigurationError(
            f"DATABASE_URL is malformed ({exc}); expected postgresql://USER:PASSWORD@HOST:PORT/NAME"
        ) from exc
    if config.get("ENGINE") != "django.db.backends.postgresql":
        raise ConfigurationError(
            "DATABASE_URL must point at PostgreSQL 15 or newer (postgresql://...); "
            f"got engine {config.get('ENGINE')!r}"
        )
    # Django's backend, with a health check that skips the round trip when it can.
    config["ENGINE"] = "paperclip.postgres"
    return config


DATABASES = {"default": _database()}
# Points a process at another database on the same server; the engine's tests start a django-q2
# cluster this way on their private test database.
if os.environ.get("PAPERCLIP_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["PAPERCLIP_DB_NAME"]
# Several test runs may share one server (developers running suites side by side).
if os.environ.get("PAPERCLIP_TEST_DB_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["PAPERCLIP_TEST_DB_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["paperclip.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Static files come straight from the apps' folders (WhiteNoise's finders): no collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "admin:login"

# Failed authentication (the admin login, board tokens, agent keys, run credentials) is throttled
# per client address, and the admin login also per account: after this many failures, each
# within the window of the one before, every attempt answers 429 (with Retry-After) until the
# window has passed since the last failure. 10 in 10 minutes leaves room for a person's typos
# and gives a guesser at most about 1,440 tries a day per address. The counters live in
# PostgreSQL, so every worker and host shares them.
PAPERCLIP_AUTH_FAILURE_LIMIT = int(os.environ.get("PAPERCLIP_AUTH_FAILURE_LIMIT", "10"))
PAPERCLIP_AUTH_LOCKOUT_SEC = int(os.environ.get("PAPERCLIP_AUTH_LOCKOUT_SEC", "600"))
# The admin login's throttle is django-axes (its attempts are rows in the database).
AXES_FAILURE_LIMIT = PAPERCLIP_AUTH_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=PAPERCLIP_AUTH_LOCKOUT_SEC)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
# Attempts refused during a lockout do not restart it, so Retry-After holds; a success does not
# wipe the failures either (it would also wipe the counts of other accounts tried from there).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_CLIENT_IP_CALLABLE = "paperclip.throttle.client_address"
AXES_LOCKOUT_CALLABLE = "paperclip.throttle.admin_lockout_response"

# The origin agents call back on (PAPERCLIP_API_URL in a run's environment), without /api.
PAPERCLIP_API_URL = os.environ.get("PAPERCLIP_API_URL", "http://127.0.0.1:8000").rstrip("/")
PAPERCLIP_TELEMETRY_CLIENT = os.environ.get(
    "PAPERCLIP_TELEMETRY_CLIENT", "paperclip.telemetry.NullTelemetryClient"
)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "paperclip.rest.ArrayCursorPagination",
    "PAGE_SIZE": 50,
    # Bearer first: its WWW-Authenticate header makes a missing credential a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "paperclip.authentication.BearerAuthentication",
        "paperclip.authentication.BoardSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["paperclip.permissions.IsActor"],
    "DEFAULT_PARSER_CLASSES": ["paperclip.rest.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["paperclip.rest.FastJSONRenderer"],
    "EXCEPTION_HANDLER": "paperclip.api.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Paperclip heartbeat control plane API",
    "DESCRIPTION": (
        "The board's API and the agents' heartbeat protocol. Board users authenticate with the "
        "admin session (plus CSRF token) or a personal token (`Authorization: Bearer pcbt_...`); "
        "agents with an API key or the run credential injected as PAPERCLIP_API_KEY. Every object "
        "belongs to a company; objects of companies the caller cannot see answer 404."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The schema and the docs page describe the API, not any company's data: public.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "IssueStatusEnum": "issues.models.IssueStatus",
        "IssuePriorityEnum": "issues.models.IssuePriority",
        "AgentStatusEnum": "heartbeat.models.AgentStatus",
        "AgentRoleEnum": "heartbeat.models.AgentRole",
        "RunStatusEnum": "heartbeat.models.RunStatus",
        "WakeSourceEnum": "heartbeat.models.WakeSource",
        "WakeupStatusEnum": "heartbeat.models.WakeupStatus",
        "CompanyStatusEnum": "paperclip.models.Company.Status",
        "WakeNoRunEnum": ["skipped", "deferred"],
        "WakeRunOutcomeEnum": ["queued", "coalesced"],
    },
}

Q_CLUSTER = {
    "name": "paperclip",
    "orm": "default",
    "workers": int(os.environ.get("PAPERCLIP_Q_WORKERS", "4")),
    # Agent runs are long; recovery of a run is ours (leases + reaper), never a django-q2 re-run,
    # so the broker's retry must exceed the longest run and failures are not re-queued.
    "timeout": int(os.environ.get("PAPERCLIP_Q_TIMEOUT", "86400")),
    "retry": int(os.environ.get("PAPERCLIP_Q_RETRY", "90000")),
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.2,
    # Workers spawn agent processes of their own; daemonic workers cannot (django-q2 docs).
    "daemonize_workers": False,
    "label": "Django Q2",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        }
    },
    "root": {"handlers": ["stderr"], "level": os.environ.get("PAPERCLIP_LOG_LEVEL", "INFO")},
    "loggers": {
        "django_q": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        # Failed logins and lockouts stay visible; every successful login does not.
        "axes": {"level": "WARNING"},
    },
}
