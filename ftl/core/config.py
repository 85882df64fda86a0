"""One settings object built from the environment; nothing else in the product reads os.environ.

Every variable is listed, with its default and meaning, in docs/operations.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

# APPSEC: secure by default (SPEC §3, docs/decisions/0110): only `ENV=development`, asked for
# by `make run` and the tests, opens the development surface; unset or anything else is production.
DEVELOPMENT = "development"
PRODUCTION = "production"
# NOTE: these have no safe default in production; their absence must stop the process at start.
PRODUCTION_SECRETS = (
    "JWT_PRIVATE_KEY_B64",
    "GOOGLE_CLIENT_ID",
    "SPORTMONKS_API_TOKEN",
    "METRICS_TOKEN",
)


class ConfigError(Exception):
    """The environment cannot run the process; the message is one line meant for the operator."""


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"config: {name} must be a whole number, got {raw!r}") from None


def _at_least_zero(env: Mapping[str, str], name: str, default: int) -> int:
    value = _integer(env, name, default)
    if value < 0:
        raise ConfigError(f"config: {name} must be 0 or more, got {value}")
    return value


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _integer(env, name, default)
    if value < 1:
        raise ConfigError(f"config: {name} must be at least 1, got {value}")
    return value


def _sentinels(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS: `host:port` pairs separated by commas."""
    raw = env.get("REDIS_SENTINELS", "").strip()
    sentinels = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"config: REDIS_SENTINELS must list host:port pairs, got {item!r}")
        sentinels.append((host, int(port)))
    return tuple(sentinels)


@dataclass(frozen=True)
class Settings:
    env: str = PRODUCTION
    database_url: str = "postgresql+psycopg://ftl@127.0.0.1:5432/ftl"
    database_read_url: str = ""  # a streaming replica for read-only queries; empty: the primary
    database_read_max_lag_ms: int = 1_000  # a replica further behind than this is not read
    database_read_check_ms: int = 250  # the replica's lag is asked at most this often per process
    redis_url: str = "redis://127.0.0.1:6379/0"
    # With sentinels, they name the primary (REDIS_MASTER_NAME) and REDIS_URL gives only the
    # database, password and scheme (ftl/store/hotstore.py, decision 0150).
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master_name: str = "ftl"
    # A trade is answered once this many replicas hold it (Redis WAIT; decision 0151).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 500
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_concurrency: int = 2
    web_request_read_timeout_s: int = 15  # a request must arrive whole within this (web/worker.py)
    ws_port: int = 8081
    ws_public_url: str = ""  # empty: ws://<the page's host>:WS_PORT/ws/prices (web/console)
    sportmonks_sim_port: int = 8090
    google_dev_port: int = 8091
    public_url: str = "http://127.0.0.1:8080"
    cors_origins: tuple[str, ...] = ("http://127.0.0.1:8080", "http://localhost:8080")
    jwt_private_key_b64: str = ""
    jwt_issuer: str = "ftl"
    jwt_audience: str = "ftl-api"
    google_client_id: str = ""
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    sportmonks_api_token: str = ""
    sportmonks_base_url: str = "https://api.sportmonks.com/v3/football"
    sportmonks_calls_per_hour: int = 3_000  # the plan's `fixture` entity budget (SPEC §5.2)
    smtp_url: str = ""
    email_from: str = "FTL <no-reply@ftl.local>"
    ws_max_connections: int = 20_000
    ws_max_connections_per_user: int = 5  # across every ws replica (SPEC §7)
    ws_commands_per_s: int = 20  # per connection (SPEC §7)
    ws_command_burst: int = 50
    ws_connection_lease_s: int = 60  # a crashed ws replica's connections stop counting after it
    disable_rate_limit: bool = False
    admin_email: str = "admin@ftl.local"
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9191
    prometheus_multiproc_dir: str = ""
    metrics_token: str = ""  # the Bearer token every /metrics asks for when set

    @property
    def is_production(self) -> bool:
        return self.env != DEVELOPMENT

    @property
    def rate_limit_enabled(self) -> bool:
        # APPSEC: the switch-off exists for load tests and demos; production ignores it.
        return self.is_production or not self.disable_rate_limit

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; raise ConfigError with one line when the environment is unusable."""
        env = os.environ if env is None else env
        get = env.get
        name = DEVELOPMENT if get("ENV", "").strip().lower() == DEVELOPMENT else PRODUCTION
        if name == PRODUCTION:
            missing = [key for key in PRODUCTION_SECRETS if not get(key, "").strip()]
            if missing:
                raise ConfigError(
                    f"config: production (ENV is not {DEVELOPMENT}) needs {', '.join(missing)}"
                )
        defaults = cls()
        web_port = _integer(env, "WEB_PORT", defaults.web_port)
        origins = get("CORS_ORIGINS")
        return cls(
            env=name,
            database_url=get("DATABASE_URL", defaults.database_url),
            database_read_url=get("DATABASE_READ_URL", "").strip(),
            database_read_max_lag_ms=_positive(
                env, "DATABASE_READ_MAX_LAG_MS", defaults.database_read_max_lag_ms
            ),
            database_read_check_ms=_positive(
                env, "DATABASE_READ_CHECK_MS", defaults.database_read_check_ms
            ),
            redis_url=get("REDIS_URL", defaults.redis_url),
            redis_sentinels=_sentinels(env),
            redis_master_name=get("REDIS_MASTER_NAME", "").strip() or defaults.redis_master_name,
            redis_wait_replicas=_at_least_zero(
                env, "REDIS_WAIT_REPLICAS", defaults.redis_wait_replicas
            ),
            redis_wait_timeout_ms=_positive(
                env, "REDIS_WAIT_TIMEOUT_MS", defaults.redis_wait_timeout_ms
            ),
            web_host=get("WEB_HOST", defaults.web_host),
            web_port=web_port,
            web_concurrency=_integer(env, "WEB_CONCURRENCY", defaults.web_concurrency),
            web_request_read_timeout_s=_integer(
                env, "WEB_REQUEST_READ_TIMEOUT_S", defaults.web_request_read_timeout_s
            ),
            ws_port=_integer(env, "WS_PORT", defaults.ws_port),
            ws_public_url=get("WS_PUBLIC_URL", defaults.ws_public_url).strip(),
            sportmonks_sim_port=_integer(env, "SPORTMONKS_SIM_PORT", defaults.sportmonks_sim_port),
            google_dev_port=_integer(env, "GOOGLE_DEV_PORT", defaults.google_dev_port),
            public_url=get("PUBLIC_URL", f"http://127.0.0.1:{web_port}"),
            cors_origins=(
                tuple(o.strip() for o in origins.split(",") if o.strip())
                if origins is not None
                else (f"http://127.0.0.1:{web_port}", f"http://localhost:{web_port}")
            ),
            jwt_private_key_b64=get("JWT_PRIVATE_KEY_B64", ""),
            jwt_issuer=get("JWT_ISSUER", defaults.jwt_issuer),
            jwt_audience=get("JWT_AUDIENCE", defaults.jwt_audience),
            google_client_id=get("GOOGLE_CLIENT_ID", ""),
            google_jwks_url=get("GOOGLE_JWKS_URL", defaults.google_jwks_url),
            sportmonks_api_token=get("SPORTMONKS_API_TOKEN", ""),
            sportmonks_base_url=get("SPORTMONKS_BASE_URL", defaults.sportmonks_base_url),
            sportmonks_calls_per_hour=_positive(
                env, "SPORTMONKS_CALLS_PER_HOUR", defaults.sportmonks_calls_per_hour
            ),
            smtp_url=get("SMTP_URL", ""),
            email_from=get("EMAIL_FROM", defaults.email_from),
            ws_max_connections=_integer(env, "WS_MAX_CONNECTIONS", defaults.ws_max_connections),
            ws_max_connections_per_user=_positive(
                env, "WS_MAX_CONNECTIONS_PER_USER", defaults.ws_max_connections_per_user
            ),
            ws_commands_per_s=_positive(env, "WS_COMMANDS_PER_S", defaults.ws_commands_per_s),
            ws_command_burst=_positive(env, "WS_COMMAND_BURST", defaults.ws_command_burst),
            ws_connection_lease_s=_positive(
                env, "WS_CONNECTION_LEASE_S", defaults.ws_connection_lease_s
            ),
            disable_rate_limit=_flag(get("DISABLE_RATE_LIMIT", "")),
            admin_email=get("ADMIN_EMAIL", defaults.admin_email),
            log_level=get("LOG_LEVEL", defaults.log_level).upper(),
            metrics_host=get("METRICS_HOST", defaults.metrics_host),
            metrics_port=_integer(env, "METRICS_PORT", defaults.metrics_port),
            # NOTE: set by the launchers (`ftl web`, `python -m workers`), not by operators.
            prometheus_multiproc_dir=get("PROMETHEUS_MULTIPROC_DIR", ""),
            metrics_token=get("METRICS_TOKEN", "").strip(),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings.from_env()
