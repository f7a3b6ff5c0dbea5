"""Client settings from the environment."""

from __future__ import annotations

import pytest

from mpg_operator.cloud import DEFAULT_BASE_URL, ClientSettings, CloudClient, RateLimiter


def test_defaults_match_the_public_api() -> None:
    s = ClientSettings.from_env({})
    assert (s.base_url, s.rate_limit, s.rate_window) == (DEFAULT_BASE_URL, 10, 10.0)
    assert DEFAULT_BASE_URL == "https://api.clickhouse.cloud/v1"


def test_from_env_reads_every_variable() -> None:
    s = ClientSettings.from_env(
        {
            "CLICKHOUSE_CLOUD_API_URL": "http://127.0.0.1:8123/v1/",
            "MPG_API_TIMEOUT": "2.5",
            "MPG_API_MAX_RETRIES": "0",
            "MPG_API_RATE_LIMIT": "3",
            "MPG_API_RATE_WINDOW": "1.5",
        }
    )
    assert s == ClientSettings(
        base_url="http://127.0.0.1:8123/v1", timeout=2.5, max_retries=0, rate_limit=3, rate_window=1.5
    )


@pytest.mark.parametrize(
    "env",
    [
        {"MPG_API_RATE_LIMIT": "ten"},
        {"MPG_API_RATE_LIMIT": "0"},
        {"MPG_API_TIMEOUT": "-1"},
        {"MPG_API_MAX_RETRIES": "-2"},
    ],
)
def test_invalid_values_are_rejected(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        ClientSettings.from_env(env)


async def test_client_from_settings_and_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_CLOUD_API_URL", "http://127.0.0.1:9/v1")
    plain = CloudClient(key_id="k-env", key_secret="s", organization_id="o")
    assert plain.base_url == "http://127.0.0.1:9/v1"
    settings = ClientSettings(base_url="http://127.0.0.1:10/v1", rate_limit=4, rate_window=2.0)
    client = CloudClient.from_settings(settings, key_id="k-settings", key_secret="s", organization_id="o")
    assert client.base_url == "http://127.0.0.1:10/v1"
    assert (client.rate_limiter.limit, client.rate_limiter.window) == (4, 2.0)
    own = RateLimiter(1, 1.0)
    assert (
        CloudClient.from_settings(
            settings, key_id="k", key_secret="s", organization_id="o", rate_limiter=own
        ).rate_limiter
        is own
    )
    for c in (plain, client):
        await c.aclose()
