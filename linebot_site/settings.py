"""Settings, all from the environment with safe defaults (see README, "Configuration")."""
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.utils.translation import gettext_lazy

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def read_keys_file(path: Path) -> dict[str, str]:
    """NAME=value lines (blank lines and # comments skipped); {} when there is no file."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


# The three keys come from the environment, else from this file, which `make` (through
# `manage.py generate_keys`) fills once with random ones so a restart keeps them.
KEYS_FILE = Path(os.environ.get("KEYS_FILE") or BASE_DIR / ".env.local")
_file_keys = read_keys_file(KEYS_FILE)


def env_key(name: str) -> str:
    return os.environ.get(name) or _file_keys.get(name, "")


DEBUG = env_bool("DEBUG", False)
# The "django-insecure-" fallbacks are public: with DEBUG off the check linebot.E001
# refuses to run on them.
SECRET_KEY = env_key("SECRET_KEY") or "django-insecure-development-key-set-SECRET_KEY"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "core",
    "models_registry",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "linebot_site.urls"
WSGI_APPLICATION = "linebot_site.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process and the workers read while one writes; IMMEDIATE
    # transactions take the write lock up front so concurrent writers queue on the
    # busy timeout instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": (
            "PRAGMA journal_mode=WAL;"
            "PRAGMA synchronous=NORMAL;"
            # Deleted and redacted text is overwritten on disk, not just unlinked.
            "PRAGMA secure_delete=ON;"
            "PRAGMA busy_timeout=20000;"
        ),
    }
    # A file (not memory) so the end-to-end test's server and workers share it; one per
    # test run so runs side by side never touch each other's.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"linebot-test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ModelBackend behind the sign-in limits (SIGNIN_LIMITS below).
AUTHENTICATION_BACKENDS = ["core.signins.LimitedModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LOCALE_PATHS = [BASE_DIR / "linebot_site" / "locale"]
# Times as 2026-12-01 22:41:38 in both languages (linebot_site/formats/).
FORMAT_MODULE_PATH = ["linebot_site.formats"]
LANGUAGES = [("en", "English"), ("zh-hant", "繁體中文")]
TIME_ZONE = os.environ.get("TIME_ZONE", "Asia/Taipei")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Photos and voice messages users send (conversations.media): kept in a storage of their own,
# a private folder beside the database by default, never served at a public URL (no MEDIA_URL).
# LINEBOT_MEDIA_STORAGE names another backend, e.g. django-storages' S3 (README, "Configuration").
LINEBOT_MEDIA_ROOT = Path(os.environ.get("LINEBOT_MEDIA_ROOT") or BASE_DIR / "media-private")
STORAGES["linebot_media"] = {
    "BACKEND": os.environ.get("LINEBOT_MEDIA_STORAGE") or "conversations.media.storage.PrivateFileSystemStorage",
}
LINEBOT_MEDIA = {
    # Downloads stop at these sizes (bytes), so a huge file never fills memory or disk.
    "MAX_IMAGE_BYTES": int(os.environ.get("LINEBOT_MEDIA_MAX_IMAGE_BYTES", str(10 * 1024 * 1024))),
    "MAX_AUDIO_BYTES": int(os.environ.get("LINEBOT_MEDIA_MAX_AUDIO_BYTES", str(20 * 1024 * 1024))),
    # Decoded size: a small file can unpack to billions of pixels (a decompression bomb).
    "MAX_IMAGE_PIXELS": int(os.environ.get("LINEBOT_MEDIA_MAX_IMAGE_PIXELS", str(40_000_000))),
    # Stored images are scaled down to this longest side; vision models read far less.
    "MAX_IMAGE_SIDE": int(os.environ.get("LINEBOT_MEDIA_MAX_IMAGE_SIDE", "2048")),
    "THUMBNAIL_SIDE": int(os.environ.get("LINEBOT_MEDIA_THUMBNAIL_SIDE", "320")),
    # A file in the storage that no row names is deleted by the purge once this old (seconds):
    # younger ones may belong to a download whose row is not committed yet.
    "ORPHAN_GRACE_SECONDS": float(os.environ.get("LINEBOT_MEDIA_ORPHAN_GRACE_SECONDS", "3600")),
    # In a group, a photo or voice message is answered when its sender addressed the bot
    # ("@Bot what is this?") at most this many seconds before it.
    "MENTION_WINDOW_SECONDS": float(os.environ.get("LINEBOT_MEDIA_MENTION_WINDOW", "60")),
}

# A LINE webhook body is small; anything bigger is refused before it is read.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
LINE_WEBHOOK_MAX_BODY_BYTES = int(os.environ.get("LINE_WEBHOOK_MAX_BODY_BYTES", str(1024 * 1024)))

# How many reverse proxies in front append to X-Forwarded-For. 0: the header is ignored
# (any client can write it) and the connecting address is the client's.
TRUSTED_PROXIES = int(os.environ.get("TRUSTED_PROXIES", "0"))

# --- Behind HTTPS (README, "Deploying behind HTTPS") ----------------------------------
# One switch for a site reached over HTTPS: plain HTTP is redirected, browsers are told
# (HSTS) never to use it, and cookies never travel over it.
HTTPS = env_bool("HTTPS", False)
# Only a proxy that sets X-Forwarded-Proto itself may be believed: a client reaching the
# server directly could send it too. (gunicorn already believes it from 127.0.0.1.)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None
SECURE_SSL_REDIRECT = HTTPS
# Health probes call the server directly, and LINE follows no redirect; the webhook
# authenticates every body by its signature, whatever the scheme it arrived by.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^line/webhook/"]
SECURE_HSTS_SECONDS = int(os.environ.get("HSTS_SECONDS", "31536000")) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
# SECURE_COOKIES alone is the older, narrower switch.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS or env_bool("SECURE_COOKIES", False)
# Preloading binds the whole domain into browsers for good, and anyone may submit a domain
# whose header asks for it: an opt-in, so Django's nudge towards it is silenced.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Secrets at rest -------------------------------------------------------------
# Comma-separated Fernet keys, newest first; older keys still decrypt (rotation).
# Empty: derived from SECRET_KEY (linebot_site.encryption), for DEBUG only.
FIELD_ENCRYPTION_KEY = env_key("FIELD_ENCRYPTION_KEY")

# Keys the hashes that confirm a redacted original or an erased user id without storing them.
AUDIT_HMAC_KEY = env_key("AUDIT_HMAC_KEY") or f"django-insecure-audit:{SECRET_KEY}"

# --- Failed sign-ins (linebot_site/signins.py) ----------------------------------------
# Wrong passwords (admin) and tokens (API) per address, wrong passwords per account; at
# the limit within WINDOW seconds, sign-ins from there or as that account are refused for
# LOCKOUT seconds. 0 turns a limit off.
SIGNIN_LIMITS = {
    "FAILURES_PER_ADDRESS": int(os.environ.get("SIGNIN_FAILURES_PER_ADDRESS", "20")),
    "FAILURES_PER_ACCOUNT": int(os.environ.get("SIGNIN_FAILURES_PER_ACCOUNT", "10")),
    "WINDOW": int(os.environ.get("SIGNIN_FAILURE_WINDOW", "900")),
    "LOCKOUT": int(os.environ.get("SIGNIN_LOCKOUT", "900")),
}
# The counts get a cache of their own, so nothing else's entries can push them out. Local memory counts per process; a Redis
# database shared by the web processes (one nothing else uses: tests clear it) counts once.
SIGNIN_CACHE_URL = os.environ.get("SIGNIN_CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "signins": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": SIGNIN_CACHE_URL,
         "KEY_PREFIX": "linebot"}
        if SIGNIN_CACHE_URL else
        # A separate LOCATION is a separate store; the cap bounds its memory (a few MB).
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "signins",
         "OPTIONS": {"MAX_ENTRIES": 50_000}}
    ),
}

# --- LINE ------------------------------------------------------------------------
LINE_CHANNEL_SECRET = os.environ.get("LINE_CHANNEL_SECRET", "")
LINE_CHANNEL_ACCESS_TOKEN = os.environ.get("LINE_CHANNEL_ACCESS_TOKEN", "")
LINE_API_HOST = os.environ.get("LINE_API_HOST", "https://api.line.me")
LINE_API_TIMEOUT = float(os.environ.get("LINE_API_TIMEOUT", "10"))
# LINE serves what users send (photos, voice messages) from a host of its own.
LINE_DATA_API_HOST = os.environ.get("LINE_DATA_API_HOST", "https://api-data.line.me")
# Where LINE and operators reach this site, e.g. https://bot.example.com: the console builds the
# webhook URL on it (else on the address the browser used). Its host is served, and trusted for
# CSRF, where a TLS tunnel's forwarded requests would otherwise fail the origin check.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
_public = urlsplit(PUBLIC_BASE_URL)
if _public.hostname and _public.scheme in ("http", "https"):
    ALLOWED_HOSTS += [] if _public.hostname in ALLOWED_HOSTS else [_public.hostname]
    CSRF_TRUSTED_ORIGINS += [f"{_public.scheme}://{_public.netloc}"]

# --- Model backends ----------------------------------------------------------------
OLLAMA_HOST = os.environ.get("OLLAMA_HOST", "http://localhost:11434")
OLLAMA_DEFAULT_MODEL = os.environ.get("OLLAMA_DEFAULT_MODEL", "gemma3:4b")
# A backend sends only the key registered with it. The ollama and replicate libraries would
# otherwise add these from the environment to every request, to whatever URL a backend names.
for _library_key in ("OLLAMA_API_KEY", "REPLICATE_API_TOKEN"):
    os.environ.pop(_library_key, None)

# --- The reply pipeline ------------------------------------------------------------
LINEBOT = {
    # A reply token is valid for about a minute; past this age we push instead.
    "REPLY_TOKEN_MAX_AGE": float(os.environ.get("LINEBOT_REPLY_TOKEN_MAX_AGE", "50")),
    # Seconds between tries of one backend on a transient error.
    "BACKEND_RETRY_DELAYS": [float(x) for x in env_list("LINEBOT_BACKEND_RETRY_DELAYS", "1,3")],
    # Seconds between tries of a LINE call answered 429 or 5xx.
    "LINE_RETRY_DELAYS": [float(x) for x in env_list("LINEBOT_LINE_RETRY_DELAYS", "1,2,4")],
    # How many times one message may be taken up by a worker before it is failed.
    "MAX_ATTEMPTS": int(os.environ.get("LINEBOT_MAX_ATTEMPTS", "3")),
    # A message queued this long without a worker taking it up is queued again
    # (the task was lost); one generating this long is presumed to have lost its worker.
    "PENDING_STUCK_AFTER": float(os.environ.get("LINEBOT_PENDING_STUCK_AFTER", "120")),
    "GENERATING_STUCK_AFTER": float(os.environ.get("LINEBOT_GENERATING_STUCK_AFTER", "900")),
    # A worker answering in a chat holds it (and a backend slot) under a lease of this many
    # seconds, renewed a third of the way through; a dead worker's chats free up when it ends.
    "CLAIM_LEASE": float(os.environ.get("LINEBOT_CLAIM_LEASE", "30")),
    # Answers each task worker process keeps in flight at once (threads); 0 answers inline.
    "ENGINE_THREADS": int(os.environ.get("LINEBOT_ENGINE_THREADS", "32")),
    # A stopping worker waits this long for its answers in flight (below `serve`'s 30 s grace).
    "ENGINE_DRAIN_SECONDS": float(os.environ.get("LINEBOT_ENGINE_DRAIN_SECONDS", "25")),
    "APOLOGY_TEXT": os.environ.get(
        "LINEBOT_APOLOGY_TEXT",
        "抱歉，我現在無法回答，請稍後再試。 Sorry, I can't answer right now — please try again later.",
    ),
}

# --- Task queue (django-q2) --------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
Q_CLUSTER = {
    "name": os.environ.get("Q_CLUSTER_QUEUE", "linebot"),
    # Few processes: a worker keeps many answers in flight itself.
    # One process: the answering engine keeps many answers in flight in each (threads), and
    # every process costs its own ~40 MiB of memory.
    "workers": int(os.environ.get("Q_WORKERS", "1")),
    # Seconds a task may run; retry must be longer so a slow task is not run twice.
    "timeout": int(os.environ.get("Q_TIMEOUT", "600")),
    "retry": int(os.environ.get("Q_RETRY", "660")),
    # Our own guard on Message.attempts decides; this stops endless re-runs of a
    # task that kills its worker.
    "max_attempts": 3,
    # A worker is replaced after this many tasks (django-q2's guard against leaks). Each
    # replacement lets its answers in flight finish first, so not too often: 500, django-q2's
    # default, is a few seconds of a busy bot.
    "recycle": int(os.environ.get("Q_RECYCLE", "10000")),
    "save_limit": -1,
    "ack_failures": True,
    "catch_up": False,
    "queue_limit": int(os.environ.get("Q_QUEUE_LIMIT", "50")),
    "poll": float(os.environ.get("Q_POLL", "0.02")),
    "bulk": int(os.environ.get("Q_BULK", "1")),
    # django-q2's app name in the admin (its AppConfig.verbose_name); lazy, so it is translated.
    "label": gettext_lazy("Task queue"),
    # django-q2 logs two lines per task at INFO; keep them for debugging only.
    "log_level": os.environ.get("Q_LOG_LEVEL", "WARNING"),
    "sync": env_bool("Q_SYNC", False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# `manage.py serve` imports these before it forks the web server and the task cluster, so
# all their processes share one copy: the tasks the workers run and the client libraries
# those call (line-bot-sdk alone is ~60 MiB). Replicate's client is left to load where used.
PRELOAD_MODULES = env_list(
    "PRELOAD_MODULES",
    "conversations.tasks,models_registry.tasks,linebot.v3.messaging,"
    "models_registry.backends.ollama,models_registry.backends.openai_compat",
)

# --- REST API (/api/v1/, see README "REST API") --------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.signins.LimitedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.api.permissions.ModelPermissions"],
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.UserThrottle", "core.api.throttling.AnonThrottle"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PagePagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_RATES": {
        "user": os.environ.get("API_THROTTLE_USER", "600/min"),
        "anon": os.environ.get("API_THROTTLE_ANON", "60/min"),
    },
    # Unset, DRF's throttles would key on the whole X-Forwarded-For, which clients write.
    "NUM_PROXIES": TRUSTED_PROXIES,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LINE × local LLM bot API",
    "DESCRIPTION": "Channels, model backends, presets, chats, messages and the audit log, "
                   "under the same permissions as the admin.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Write-only secrets stay out of the response components.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.add_error_responses",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # django-q2 logs as "django-q" (with a hyphen).
    "loggers": {"django-q": {"level": os.environ.get("Q_LOG_LEVEL", "WARNING"), "propagate": True}},
}
