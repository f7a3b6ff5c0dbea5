"""Batched observation: one LIST per organization serves every resource of that organization."""

import asyncio

import pytest

from mpg_operator.cloud.errors import AuthError
from mpg_operator.cloud.models import PostgresServiceListItem
from mpg_operator.controller.cloudaccess import ServiceSnapshots, changed_owners, current_resource


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


async def test_a_wrong_secret_with_the_right_key_id_only_affects_its_own_resources():
    """Issue 7, defect 6: the cache was keyed by (url, org, key id), so a Secret with the right key
    id and a wrong secret made healthy resources of the organization report a credentials error
    (and got their services without a valid key)."""
    snapshots = ServiceSnapshots(error_ttl=5)
    good, bad = CountingClient(), CountingClient(fail=True)  # same url, org and key id
    with pytest.raises(AuthError):
        await snapshots.get(bad, max_age=30)
    snap = await snapshots.get(good, max_age=30)  # not the bad client's cached 401
    assert [s.id for s in snap.services] == ["s1"]
    with pytest.raises(AuthError):  # nor the good client's snapshot for the bad one
        await snapshots.get(bad, max_age=30)
    assert (good.calls, bad.calls) == (1, 1)


def _item(sid, uid, **fields):
    return PostgresServiceListItem(
        id=sid, state=fields.pop("state", "running"), tags=[{"key": "mpg-operator.uid", "value": uid}], **fields
    )


def test_changed_owners_names_changed_new_and_vanished_services_only():
    old = [_item("a", "u1"), _item("b", "u2"), _item("c", "u3"), PostgresServiceListItem(id="x", state="running")]
    new = [
        _item("a", "u1"),
        _item("b", "u2", size="r8gd.xlarge"),
        _item("d", "u4", state="creating"),
        PostgresServiceListItem(id="x", state="stopped"),
    ]
    assert changed_owners(old, new) == {"u2", "u3", "u4"}


class ScriptedClient(CountingClient):
    def __init__(self, lists):
        super().__init__()
        self.lists = list(lists)

    async def list_services(self):
        self.calls += 1
        return self.lists.pop(0)


async def test_each_new_list_wakes_the_owners_of_what_changed():
    woken: list[set[str]] = []
    snapshots = ServiceSnapshots(on_change=woken.append)
    client = ScriptedClient(
        [
            [_item("a", "u1", state="creating"), _item("b", "u2")],
            [_item("a", "u1"), _item("b", "u2")],
            [_item("a", "u1"), _item("b", "u2")],
        ]
    )
    await snapshots.get(client, max_age=0)
    await snapshots.get(client, max_age=0)
    await snapshots.get(client, max_age=0)
    assert woken == [{"u1"}]


async def test_passes_record_which_resources_use_an_entry():
    snapshots, client = ServiceSnapshots(), CountingClient()

    async def pass_of(uid):
        current_resource.set(uid)
        await snapshots.get(client, max_age=30)

    await asyncio.gather(pass_of("u1"), pass_of("u2"))
    await snapshots.get(client, max_age=30)  # no resource (the observer)
    [entry] = snapshots.entries()
    assert set(entry.users) == {"u1", "u2"}


async def test_the_observer_lists_every_interval_and_faster_only_while_in_flight_on_an_idle_key():
    from mpg_operator.cloud.ratelimit import RateLimiter
    from mpg_operator.controller.observer import Observer

    woken: list[set[str]] = []
    snapshots, client = ServiceSnapshots(on_change=woken.append), CountingClient()
    client.rate_limiter = RateLimiter(10, 10.0)
    in_flight: set[str] = set()
    observer = Observer(snapshots, interval=30, fast_interval=2.5, forget_after=600, in_flight=in_flight.__contains__)
    current_resource.set("u1")
    await snapshots.get(client, max_age=30)
    current_resource.set(None)
    [entry] = snapshots.entries()
    now = entry.snapshot.fetched_at
    mono = 0.0
    assert observer.due(entry, mono, now + 5) is None  # fresh, nothing in flight
    assert observer.due(entry, mono, now + 30) == "steady"
    in_flight.add("u1")
    assert observer.due(entry, mono, now + 1) is None  # younger than the fast interval
    assert observer.due(entry, mono, now + 3) == "fast"
    for _ in range(5):  # half the key's window used: queued work comes first
        await client.rate_limiter.acquire()
    assert observer.due(entry, mono, now + 3) is None
    observer.sweep()  # the steady LIST is not due yet
    assert client.calls == 1


async def test_the_observer_forgets_organizations_without_resources():
    from mpg_operator.controller.observer import Observer

    snapshots, client = ServiceSnapshots(), CountingClient()
    observer = Observer(snapshots, interval=30, fast_interval=2.5, forget_after=0.5, in_flight=lambda uid: False)
    current_resource.set("u1")
    await snapshots.get(client, max_age=30)
    current_resource.set(None)
    observer.sweep()
    assert len(snapshots.entries()) == 1
    await asyncio.sleep(0.6)
    observer.sweep()
    assert snapshots.entries() == []


async def test_the_observer_refreshes_and_wakes_changed_resources():
    from mpg_operator.controller.observer import Observer

    woken: list[set[str]] = []
    snapshots = ServiceSnapshots(on_change=woken.append)
    client = ScriptedClient([[_item("a", "u1", state="creating")], [_item("a", "u1")]])
    observer = Observer(
        snapshots, interval=0.2, fast_interval=0.1, forget_after=60, in_flight=lambda uid: False, tick=0.05
    )
    current_resource.set("u1")
    await snapshots.get(client, max_age=30)
    current_resource.set(None)
    task = asyncio.ensure_future(observer.run())
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if woken:
                break
    finally:
        task.cancel()
    assert woken == [{"u1"}] and observer.lists["steady"] == 1


async def test_a_sleeping_daemon_wakes_on_its_call_on_stop_and_on_time_without_tasks():
    """A sleep is one future and a timer: no task per sleep, however many resources sleep."""
    from mpg_operator.controller.wakeup import Wakeup

    async def timed(coro):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(coro, timeout=5)
        return loop.time() - started

    class Stopped:  # kopf.DaemonStopped's public side: wait() returns once the daemon is stopped
        def __init__(self):
            self.flag = asyncio.Event()

        async def wait(self):
            await self.flag.wait()

    wake, stopped = Wakeup(), Stopped()
    watcher = wake.ring_when_stopped(stopped)
    assert await timed(wake.sleep(0.05)) < 1  # on time
    before = len(asyncio.all_tasks())
    sleeper = asyncio.ensure_future(wake.sleep(30))
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == before + 1  # only the sleeper itself
    wake.set()
    assert await timed(sleeper) < 1  # on its call
    assert await timed(wake.sleep(30)) < 0.5  # rung before the sleep began: no sleep
    wake.clear()
    sleeper = asyncio.ensure_future(wake.sleep(30))
    await asyncio.sleep(0.01)
    stopped.flag.set()
    assert await timed(sleeper) < 1  # on stop
    assert watcher.done()
