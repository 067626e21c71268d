"""Every setting the app reads from the environment, in one place.

`.env` (see `.env.example`) is loaded by python-dotenv before these classes are built, so a
developer's local settings and a server's real environment both end up here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
# A checkout (the README's `make run`) keeps its instance/ and .env at its top; an installed
# wheel keeps them in the directory it is started from.
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
HOME_DIR = PROJECT_ROOT if IN_CHECKOUT else Path.cwd()
INSTANCE_DIR = Path(os.environ.get("INSTANCE_PATH") or HOME_DIR / "instance")

load_dotenv(HOME_DIR / ".env")


def shipped(name: str) -> Path:
    """templates/, static/ or migrations/: at the top of a checkout, inside the installed package
    (pyproject.toml maps them under chat/ in a wheel)."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PROJECT_ROOT / name


def env_int(name: str, default: int) -> int:
    """Read an integer setting; a malformed value stops start-up with the setting's name."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"{name} must be a whole number, got {raw!r}") from None


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in {"0", "false", "no", "off"}


def env_mode(name: str) -> bool | None:
    """A flag that may be left to detection: unset (or "auto") is None."""
    raw = os.environ.get(name, "").strip().lower()
    return None if raw in {"", "auto"} else env_flag(name, False)


def is_cluster(url: str) -> bool:
    """Whether the Redis at `url` is a node of a cluster (its INFO says so): how REDIS_CLUSTER
    is detected when unset."""
    import redis  # here, not at the top: gunicorn's master imports this module before forking

    with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as node:
        return bool(node.info("cluster").get("cluster_enabled"))


def database_url() -> str:
    return sqlalchemy_url(os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'durable-chat.sqlite3'}")


def sqlalchemy_url(url: str) -> str:
    """Hosted providers hand out postgres:// URLs; SQLAlchemy wants the psycopg 3 dialect named."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Config:
    # Signs session cookies. Unset: one key generated once and kept in the database, shared by
    # every host that uses it (chat/people/secret_key.py). Old keys listed here (comma-separated) are
    # still accepted, for rotating SECRET_KEY without signing everyone out.
    SECRET_KEY = os.environ.get("SECRET_KEY") or None
    SECRET_KEY_FALLBACKS = [key.strip() for key in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()]
    SQLALCHEMY_DATABASE_URI = database_url()
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {}  # create_app adds pool_pre_ping for a server
    # Unset means "start an embedded redis-server" (chat/embedded_redis.py).
    REDIS_URL = os.environ.get("REDIS_URL") or None
    REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN") or None
    # REDIS_URL names a node of a Redis Cluster: 1, or 0, or unset to ask the node (INFO cluster)
    # when first connecting; gunicorn's master asks once and tells its workers.
    REDIS_CLUSTER = env_mode("REDIS_CLUSTER")
    # Connections per process. Streaming readers share one multiplexed XREAD, so this is far
    # below gunicorn's worker_connections; requests beyond it wait for a free connection.
    REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 64)
    REDIS_SOCKET_TIMEOUT_MS = env_int("REDIS_SOCKET_TIMEOUT_MS", 10_000)

    RESUMABLE_STREAMS = env_flag("RESUMABLE_STREAMS", True)
    # Producer side: 0 writes a reply's waiting text as soon as the previous write has returned
    # (lowest latency; batches grow by themselves under load). A positive value writes at most
    # this often instead, or when STREAM_FLUSH_CHARS are waiting: fewer, larger Redis writes.
    STREAM_FLUSH_MS = env_int("STREAM_FLUSH_MS", 0)
    STREAM_FLUSH_CHARS = env_int("STREAM_FLUSH_CHARS", 400)
    # Liveness: a producer refreshes its heartbeat this often; readers and the reaper call it
    # dead (and the reply interrupted) once the heartbeat is older than the timeout.
    HEARTBEAT_INTERVAL_MS = env_int("HEARTBEAT_INTERVAL_MS", 1000)
    PRODUCER_TIMEOUT_MS = env_int("PRODUCER_TIMEOUT_MS", 5000)
    # Reader side: one XREAD BLOCK per process, shorter than the Redis socket timeout.
    READER_BLOCK_MS = env_int("READER_BLOCK_MS", 1000)
    SSE_KEEPALIVE_SECONDS = env_int("SSE_KEEPALIVE_SECONDS", 15)
    # Retention: a finished stream is kept this long for late resumers, then expires.
    STREAM_TTL_SECONDS = env_int("STREAM_TTL_SECONDS", 600)
    STREAM_MAXLEN = env_int("STREAM_MAXLEN", 20_000)
    CHAT_STREAMS_TTL_SECONDS = env_int("CHAT_STREAMS_TTL_SECONDS", 86_400)
    # The longest a reply may generate; also bounds how long a stream key lives while live.
    MAX_REPLY_SECONDS = env_int("MAX_REPLY_SECONDS", 600)
    REAPER_INTERVAL_SECONDS = env_int("REAPER_INTERVAL_SECONDS", 5)
    # A stopping worker (deploy, `kill -HUP` reload, max-requests) lets its replies finish this
    # long, then ends the rest `interrupted` with their text (gunicorn's graceful_timeout follows).
    GRACEFUL_REPLY_SECONDS = env_int("GRACEFUL_REPLY_SECONDS", 15)

    # Rate limits ("N/second|minute|hour|day", counted in Redis across workers and hosts).
    RATE_LIMITS_ENABLED = env_flag("RATE_LIMITS_ENABLED", True)
    # A moving window: no double burst at the edge of a fixed window.
    RATELIMIT_STRATEGY = "moving-window"
    RATE_LIMIT_MESSAGES = os.environ.get("RATE_LIMIT_MESSAGES") or "20/minute"  # per identity
    RATE_LIMIT_MESSAGES_PER_IP = os.environ.get("RATE_LIMIT_MESSAGES_PER_IP") or "120/minute"
    RATE_LIMIT_NEW_GUESTS = os.environ.get("RATE_LIMIT_NEW_GUESTS") or "20/hour"  # per IP
    RATE_LIMIT_SIGN_IN = os.environ.get("RATE_LIMIT_SIGN_IN") or "10/minute"  # per IP (sign-ups too)
    # Wrong passwords per (account, address), backing off: 5 a minute, 20 an hour.
    RATE_LIMIT_SIGN_IN_PER_ACCOUNT = os.environ.get("RATE_LIMIT_SIGN_IN_PER_ACCOUNT") or "5/minute;20/hour"
    RATE_LIMIT_STREAM_OPENS = os.environ.get("RATE_LIMIT_STREAM_OPENS") or "120/minute"  # per identity
    RATE_LIMIT_SEARCHES = os.environ.get("RATE_LIMIT_SEARCHES") or "60/minute"  # per identity
    RATE_LIMIT_UPLOADS = os.environ.get("RATE_LIMIT_UPLOADS") or "60/minute"  # per identity (POST /api/files)
    # Replies one identity may have being written at once (each holds a credit reservation).
    LIVE_REPLIES_PER_IDENTITY = env_int("LIVE_REPLIES_PER_IDENTITY", 10)
    # Streams one identity may hold open at once (every tab of a page holds one; scripts too).
    STREAMS_PER_IDENTITY = env_int("STREAMS_PER_IDENTITY", 50)
    # Request bodies beyond this are refused with 413 (a message is MAX_MESSAGE_CHARS at most).
    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
    # CSRF tokens last as long as the session (a long-open tab can still send).
    WTF_CSRF_TIME_LIMIT = None

    MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 8000)
    # Attachments: bytes per file, files per message (the upload endpoints' body limit follows).
    MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 10_000_000)
    MAX_FILES_PER_MESSAGE = env_int("MAX_FILES_PER_MESSAGE", 5)
    # Where attachments' bytes live: `database` (shared by every instance), or s3://bucket/prefix
    # (boto3; S3_ENDPOINT_URL for a bucket that is not AWS's: MinIO, R2, …).
    FILE_STORE = os.environ.get("FILE_STORE") or "database"
    S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL") or None
    # CPU one streaming reply's Markdown may cost a worker (shared by every tab watching it);
    # past it the reply's open block streams as escaped text, and the finished message renders once.
    MARKDOWN_CPU_BUDGET_MS = env_int("MARKDOWN_CPU_BUDGET_MS", 1000)
    # A chat page shows this many of the newest messages; "Earlier messages" pages back.
    CHAT_PAGE_MESSAGES = env_int("CHAT_PAGE_MESSAGES", 100)
    # A tool's result is cut to this many characters before the model and the page see it.
    TOOL_RESULT_MAX_CHARS = env_int("TOOL_RESULT_MAX_CHARS", 20_000)
    HISTORY_CHAR_BUDGET = env_int("HISTORY_CHAR_BUDGET", 24_000)
    # New guests start with this many credits (1 credit = 1,000,000 micro-credits internally);
    # signing up adds SIGNUP_CREDIT_GRANT. Sign-ups count under RATE_LIMIT_NEW_GUESTS, and with no
    # e-mail check an account is no harder to make than a guest: a larger sign-up grant is farmed.
    # ALLOW_GUESTS=0 sends everyone to sign in first.
    GUEST_CREDIT_GRANT = env_int("GUEST_CREDIT_GRANT", 100)
    # Credits an identity may spend in a calendar month (UTC) unless the console sets its own;
    # 0: no cap. Once charges and live replies reach it, new messages are refused (402) until the
    # month ends.
    MONTHLY_SPEND_CAP = env_int("MONTHLY_SPEND_CAP", 0)
    SIGNUP_CREDIT_GRANT = env_int("SIGNUP_CREDIT_GRANT", 100)
    ALLOW_GUESTS = env_flag("ALLOW_GUESTS", True)
    MIN_PASSWORD_LENGTH = env_int("MIN_PASSWORD_LENGTH", 8)

    AGENTS_FILE = os.environ.get("AGENTS_FILE") or str(PACKAGE_DIR / "agents" / "agents.toml")
    OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY") or None
    OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL") or None
    OPENAI_TIMEOUT_SECONDS = env_int("OPENAI_TIMEOUT_SECONDS", 60)
    DEMO_MODEL_WORDS = env_int("DEMO_MODEL_WORDS", 60)
    DEMO_MODEL_DELAY_MS = env_int("DEMO_MODEL_DELAY_MS", 40)

    # Who may read /metrics: a scraper sending `Authorization: Bearer <METRICS_TOKEN>`; unset,
    # only a client on this machine that came through no proxy.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    # `json`: every log line a JSON object, with a line per request and per reply event.
    LOG_FORMAT = os.environ.get("LOG_FORMAT") or "text"
    # Proxies in front of the app whose X-Forwarded-* headers are trusted (0: none; 1 behind one
    # nginx or Caddy). Client addresses (rate limits) and https detection depend on it.
    PROXY_HOPS = env_int("PROXY_HOPS", 0)

    SESSION_COOKIE_NAME = "durable_chat"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", False)
    PERMANENT_SESSION_LIFETIME = 60 * 60 * 24 * 365
