"""Batched observation: one LIST per organization serves every resource of that organization."""

import asyncio

import pytest

from mpg_operator.cloud.errors import AuthError
from mpg_operator.cloud.models import PostgresServiceListItem
from mpg_operator.controller.cloudaccess import ServiceSnapshots


class CountingClient:
    def __init__(self, org="org", fail=False):
        self.base_url, self.organization_id, self.key_id = "http://api", org, "key"
        self.calls = 0
        self.fail = fail

    async def list_services(self):
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise AuthError("UNAUTHORIZED", status=401)
        return [PostgresServiceListItem(id="s1", state="running")]


async def test_concurrent_resources_share_one_list():
    snapshots, client = ServiceSnapshots(), CountingClient()
    results = await asyncio.gather(*(snapshots.get(client, max_age=30) for _ in range(200)))
    assert client.calls == 1
    assert all(r is results[0] for r in results)
    assert results[0].services[0].id == "s1"


async def test_a_snapshot_older_than_max_age_is_refreshed():
    snapshots, client = ServiceSnapshots(), CountingClient()
    await snapshots.get(client, max_age=30)
    await snapshots.get(client, max_age=30)
    assert client.calls == 1
    await asyncio.sleep(0.02)
    await snapshots.get(client, max_age=0.01)
    assert client.calls == 2


async def test_organizations_are_observed_separately():
    snapshots = ServiceSnapshots()
    a, b = CountingClient("a"), CountingClient("b")
    await asyncio.gather(snapshots.get(a, max_age=30), snapshots.get(b, max_age=30))
    assert (a.calls, b.calls) == (1, 1)


async def test_a_failed_list_is_not_repeated_by_every_resource():
    snapshots, client = ServiceSnapshots(error_ttl=5), CountingClient(fail=True)
    for _ in range(50):
        with pytest.raises(AuthError):
            await snapshots.get(client, max_age=30)
    assert client.calls == 1
