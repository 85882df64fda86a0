from __future__ import annotations

import pytest

from ftl.core.config import ConfigError, Settings

SECRETS = {
    "JWT_PRIVATE_KEY_B64": "a2V5",
    "GOOGLE_CLIENT_ID": "client.apps.googleusercontent.com",
    "SPORTMONKS_API_TOKEN": "token",
    "METRICS_TOKEN": "scrape",
}
DEVELOPMENT = {"ENV": "development"}


def test_development_is_only_what_is_asked_for_and_needs_no_secrets() -> None:
    settings = Settings.from_env(DEVELOPMENT)
    assert not settings.is_production
    assert settings.env == "development"
    assert settings.web_port == 8080
    assert settings.ws_port == 8081
    assert settings.sportmonks_sim_port == 8090
    assert settings.google_dev_port == 8091
    assert settings.ws_max_connections == 20_000
    assert settings.cors_origins == ("http://127.0.0.1:8080", "http://localhost:8080")


@pytest.mark.parametrize("env", [{}, {"ENV": ""}, {"ENV": "production"}, {"ENV": "staging"}])
def test_unset_or_unknown_environment_is_production(env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, **SECRETS})
    assert settings.is_production
    assert settings.env == "production"


@pytest.mark.parametrize("env", [{}, {"ENV": "production"}, {"ENV": "test"}])
def test_production_without_secrets_names_every_missing_one_in_one_line(
    env: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**env, "GOOGLE_CLIENT_ID": "x"})
    message = str(caught.value)
    assert "\n" not in message
    assert "JWT_PRIVATE_KEY_B64" in message
    assert "SPORTMONKS_API_TOKEN" in message
    assert "METRICS_TOKEN" in message
    assert "GOOGLE_CLIENT_ID" not in message


def test_production_with_secrets_starts() -> None:
    settings = Settings.from_env({"ENV": "production", **SECRETS})
    assert settings.is_production


def test_blank_secret_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="GOOGLE_CLIENT_ID"):
        Settings.from_env({"ENV": "production", **SECRETS, "GOOGLE_CLIENT_ID": "  "})


def test_non_numeric_port_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match="WEB_PORT must be a whole number"):
        Settings.from_env({**DEVELOPMENT, "WEB_PORT": "eighty"})


def test_rate_limit_switch_is_ignored_in_production() -> None:
    assert not Settings.from_env({**DEVELOPMENT, "DISABLE_RATE_LIMIT": "1"}).rate_limit_enabled
    assert Settings.from_env({"DISABLE_RATE_LIMIT": "1", **SECRETS}).rate_limit_enabled


def test_cors_origins_follow_the_web_port_unless_given() -> None:
    assert (
        Settings.from_env({**DEVELOPMENT, "WEB_PORT": "9000"}).cors_origins[0]
        == "http://127.0.0.1:9000"
    )
    given = Settings.from_env(
        {**DEVELOPMENT, "CORS_ORIGINS": "https://ftl.example, https://www.ftl.example"}
    )
    assert given.cors_origins == ("https://ftl.example", "https://www.ftl.example")


def test_metrics_settings_come_from_the_environment() -> None:
    given = Settings.from_env(
        {
            **DEVELOPMENT,
            "METRICS_HOST": "0.0.0.0",
            "METRICS_PORT": "9192",
            "PROMETHEUS_MULTIPROC_DIR": "/m",
        }
    )
    assert (given.metrics_host, given.metrics_port, given.prometheus_multiproc_dir) == (
        "0.0.0.0",
        9192,
        "/m",
    )
    default = Settings.from_env(DEVELOPMENT)
    assert (default.metrics_host, default.metrics_port, default.prometheus_multiproc_dir) == (
        "127.0.0.1",
        9191,
        "",
    )


def test_the_sportmonks_call_budget_is_read_and_must_be_positive() -> None:
    assert Settings.from_env({"ENV": "development"}).sportmonks_calls_per_hour == 3_000
    assert (
        Settings.from_env(
            {"ENV": "development", "SPORTMONKS_CALLS_PER_HOUR": "1500"}
        ).sportmonks_calls_per_hour
        == 1500
    )
    with pytest.raises(ConfigError, match="SPORTMONKS_CALLS_PER_HOUR must be at least 1"):
        Settings.from_env({"ENV": "development", "SPORTMONKS_CALLS_PER_HOUR": "0"})


def test_the_read_replica_is_off_unless_named_and_its_lag_settings_must_be_positive() -> None:
    assert Settings.from_env(DEVELOPMENT).database_read_url == ""
    settings = Settings.from_env(
        {
            **DEVELOPMENT,
            "DATABASE_READ_URL": " postgresql://ftl@replica/ftl ",
            "DATABASE_READ_MAX_LAG_MS": "500",
            "DATABASE_READ_CHECK_MS": "100",
        }
    )
    assert settings.database_read_url == "postgresql://ftl@replica/ftl"
    assert (settings.database_read_max_lag_ms, settings.database_read_check_ms) == (500, 100)
    for name in ("DATABASE_READ_MAX_LAG_MS", "DATABASE_READ_CHECK_MS"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**DEVELOPMENT, name: "0"})


def test_sentinels_are_host_port_pairs_and_name_the_primary() -> None:
    settings = Settings.from_env(
        {
            **DEVELOPMENT,
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,",
            "REDIS_MASTER_NAME": "hot",
            "REDIS_WAIT_REPLICAS": "1",
            "REDIS_WAIT_TIMEOUT_MS": "250",
        }
    )
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert settings.redis_master_name == "hot"
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 250)


def test_without_sentinels_redis_is_the_url_and_no_trade_waits_for_a_replica() -> None:
    settings = Settings.from_env(DEVELOPMENT)
    assert settings.redis_sentinels == ()
    assert settings.redis_wait_replicas == 0


@pytest.mark.parametrize("value", ["sentinel", "host:", ":26379", "host:port", "host:70000"])
def test_a_sentinel_without_host_and_port_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS must list host:port pairs"):
        Settings.from_env({**DEVELOPMENT, "REDIS_SENTINELS": value})


def test_a_negative_replica_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="REDIS_WAIT_REPLICAS must be 0 or more"):
        Settings.from_env({**DEVELOPMENT, "REDIS_WAIT_REPLICAS": "-1"})
