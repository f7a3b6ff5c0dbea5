"""Operator settings from the environment (the metrics: test_metrics.py)."""

import pytest

from mpg_operator.controller.settings import OperatorSettings


def test_settings_defaults():
    s = OperatorSettings.from_env({})
    assert s.client.base_url == "https://api.clickhouse.cloud/v1"
    assert s.client.rate_limit == 10 and s.client.rate_window == 10
    assert (s.poll_interval, s.poll_interval_active, s.list_max_age) == (300, 15, 30)
    assert s.list_fast_interval == 2.5 and s.max_concurrent_passes == 32
    assert s.defaults.deletion_policy == "Delete" and s.default_credentials_secret is None


def test_settings_from_env():
    s = OperatorSettings.from_env(
        {
            "CLICKHOUSE_CLOUD_API_URL": "http://127.0.0.1:8123/v1/",
            "MPG_DEFAULT_CREDENTIALS_SECRET": "mpg-system/clickhouse-cloud",
            "MPG_DEFAULT_DELETION_POLICY": "Orphan",
            "MPG_POLL_INTERVAL": "60",
            "MPG_API_RATE_LIMIT": "20",
            "MPG_LIST_FAST_INTERVAL": "5",
        }
    )
    assert s.client.base_url == "http://127.0.0.1:8123/v1"
    assert s.default_credentials_secret == ("mpg-system", "clickhouse-cloud")
    assert s.defaults.deletion_policy == "Orphan" and s.poll_interval == 60 and s.client.rate_limit == 20
    assert s.list_fast_interval == 5
    assert OperatorSettings.from_env({"MPG_MAX_CONCURRENT_PASSES": "0"}).max_concurrent_passes == 0
    with pytest.raises(ValueError):
        OperatorSettings.from_env({"MPG_MAX_CONCURRENT_PASSES": "-1"})


@pytest.mark.parametrize(
    "env",
    [
        {"MPG_DEFAULT_CREDENTIALS_SECRET": "no-namespace"},
        {"MPG_DEFAULT_DELETION_POLICY": "Destroy"},
        {"MPG_POLL_INTERVAL": "0"},
    ],
)
def test_bad_settings_are_rejected_with_the_variable_named(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        OperatorSettings.from_env(env)
