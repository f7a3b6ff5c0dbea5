"""KubeApi against the Kubernetes emulator, logged in as the operator is (kopf's public kubeconfig login)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from support.e2e import manifest

from mpg_operator import crd
from mpg_operator.controller.kube import KubeApi, KubeApiError, SecretKeyError
from mpg_operator.reconcile.connection import (
    ANN_HAND_OVER_TO,
    LABEL_MANAGED_BY,
    SecretConflictError,
    SecretRejectedError,
)

pytest.importorskip("kmock")
pytest.importorskip("celpy")
from kubeemu import KubeEmulator  # noqa: E402

NS = "default"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[KubeEmulator]:
    with KubeEmulator(crds=[crd.crd()], namespaces=[NS]) as emulator:
        emulator.kubeconfig_path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture
async def kube(emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeApi]:
    """Logged in as the operator is (its default login: no ServiceAccount here, so the kubeconfig)."""
    monkeypatch.setenv("KUBECONFIG", str(emu.kubeconfig_path))
    api = KubeApi()
    yield api
    await api.aclose()


async def test_kopf_and_the_operator_log_in_alike(emu: KubeEmulator, kube: KubeApi) -> None:
    """kopf's login handler and the operator's own requests use the same login (the kubeconfig here)."""
    from mpg_operator.controller.handlers import login  # here: importing it registers the handlers with kopf

    info = login(settings=kopf.OperatorSettings())
    assert info is not None and info.server == emu.url
    assert await kube.get_resource(NS, "absent") is None
    assert kube.session.server == info.server and kube.session.logins == 1


def owner(emu: KubeEmulator, name: str = "db") -> dict[str, Any]:
    return emu.apply(manifest(name, NS))


def secret(emu: KubeEmulator, name: str) -> dict[str, Any] | None:
    return emu.get("v1", "Secret", name, NS)


def decoded(obj: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


async def test_resource_read_and_status_merge_patch(emu: KubeEmulator, kube: KubeApi) -> None:
    assert await kube.get_resource(NS, "absent") is None
    created = owner(emu)
    fetched = await kube.get_resource(NS, "db")
    assert fetched is not None and fetched["metadata"]["uid"] == created["metadata"]["uid"]

    stored = await kube.patch_status(NS, "db", {"serviceId": "svc-1", "state": "creating"})
    assert stored["status"]["serviceId"] == "svc-1" and stored["status"]["state"] == "creating"
    stored = await kube.patch_status(NS, "db", {"state": None})  # None removes the field (merge patch)
    assert "state" not in stored["status"] and stored["status"]["serviceId"] == "svc-1"
    assert emu.get("clickhouse.cloud/v1alpha1", "ManagedPostgres", "db", NS)["status"] == {"serviceId": "svc-1"}
    assert stored["spec"] == created["spec"]  # the status subresource leaves the spec alone

    with pytest.raises(KubeApiError) as err:
        await kube.patch_status(NS, "absent", {"state": "running"})
    assert err.value.status == 404


async def test_secret_data_and_missing_keys(emu: KubeEmulator, kube: KubeApi) -> None:
    with pytest.raises(SecretKeyError) as err:
        await kube.read_secret_data(NS, "creds", ("keyId",))
    assert err.value.missing_keys == () and "does not exist" in str(err.value)

    emu.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
               "stringData": {"keyId": "k1", "keySecret": ""}})  # fmt: skip
    assert await kube.read_secret_data(NS, "creds", ("keyId",)) == {"keyId": "k1"}
    with pytest.raises(SecretKeyError) as err:
        await kube.read_secret_data(NS, "creds", ("keyId", "keySecret", "organizationId"))
    assert err.value.missing_keys == ("keySecret", "organizationId")


async def test_connection_secret_is_created_owned_then_updated(emu: KubeEmulator, kube: KubeApi) -> None:
    db = owner(emu)
    await kube.write_connection_secret(namespace=NS, name="db-conn", owner=db, data=None, annotations={})
    claimed = secret(emu, "db-conn")
    assert claimed is not None and decoded(claimed) == {}
    [ref] = claimed["metadata"]["ownerReferences"]
    assert ref["uid"] == db["metadata"]["uid"] and ref["controller"] is True and ref["kind"] == "ManagedPostgres"
    assert claimed["metadata"]["labels"][LABEL_MANAGED_BY] == "mpg-operator"

    await kube.write_connection_secret(
        namespace=NS, name="db-conn", owner=db, data={"password": "pw-1"}, annotations={"a": "1"}
    )
    await kube.write_connection_secret(namespace=NS, name="db-conn", owner=db, data=None, annotations={})
    written = secret(emu, "db-conn")
    assert written is not None and decoded(written) == {"password": "pw-1"}  # a claim changes nothing
    assert written["metadata"]["annotations"] == {"a": "1"}

    observed = await kube.observe_connection_secret(NS, "db-conn")
    assert observed is not None
    assert observed.data == {"password": "pw-1"} and observed.controller_uid == db["metadata"]["uid"]
    assert await kube.observe_connection_secret(NS, "absent") is None


async def test_foreign_secret_is_never_written_unless_handed_over(emu: KubeEmulator, kube: KubeApi) -> None:
    db = owner(emu)
    foreign_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "cm-uid"}
    emu.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "db-conn", "namespace": NS, "ownerReferences": [foreign_ref]},
               "stringData": {"password": "theirs"}})  # fmt: skip
    for data in (None, {"password": "mine"}):
        with pytest.raises(SecretConflictError) as err:
            await kube.write_connection_secret(namespace=NS, name="db-conn", owner=db, data=data, annotations={})
        assert "theirs" not in str(err.value)
    assert decoded(secret(emu, "db-conn") or {}) == {"password": "theirs"}

    emu.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-conn", "namespace": NS,
               "ownerReferences": [foreign_ref], "annotations": {ANN_HAND_OVER_TO: "db"}}})  # fmt: skip
    await kube.write_connection_secret(
        namespace=NS, name="db-conn", owner=db, data={"password": "mine"}, annotations={ANN_HAND_OVER_TO: None}
    )
    taken = secret(emu, "db-conn")
    assert taken is not None and decoded(taken) == {"password": "mine"}
    assert ANN_HAND_OVER_TO not in (taken["metadata"].get("annotations") or {})
    refs = taken["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == ["cm-uid", db["metadata"]["uid"]]  # other owners kept


async def test_secret_kubernetes_refuses_is_reported(emu: KubeEmulator, kube: KubeApi) -> None:
    db = owner(emu)
    with pytest.raises(SecretRejectedError) as err:
        await kube.write_connection_secret(
            namespace=NS, name="db-conn", owner=db, data={"password": "s3cret-pw"}, annotations={},
            labels={"team": "not a valid label value!"},
        )  # fmt: skip
    assert "metadata.labels" in str(err.value) and "s3cret-pw" not in str(err.value)
    assert secret(emu, "db-conn") is None


async def test_finalizers_from_many_resources_and_another_writer(emu: KubeEmulator, kube: KubeApi) -> None:
    emu.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
               "stringData": {"keyId": "k"}})  # fmt: skip
    other = KubeApi()  # another process: its change conflicts with ours (409), and is retried
    names = [f"example.com/db-{i}" for i in range(12)]
    await asyncio.gather(
        *(kube.set_secret_finalizer(NS, "creds", n, present=True) for n in names[:3]),
        other.set_secret_finalizer(NS, "creds", names[3], present=True),
    )
    await asyncio.gather(*(kube.set_secret_finalizer(NS, "creds", n, present=True) for n in names[4:]))
    assert sorted((secret(emu, "creds") or {})["metadata"]["finalizers"]) == sorted(names)

    await kube.set_secret_finalizer(NS, "creds", names[0], present=True)  # already there: no write
    await asyncio.gather(*(kube.set_secret_finalizer(NS, "creds", n, present=False) for n in names[1:]))
    assert (secret(emu, "creds") or {})["metadata"]["finalizers"] == [names[0]]
    await kube.set_secret_finalizer(NS, "absent", names[0], present=True)  # a gone Secret is fine
    await other.aclose()


def changed_after_reads(
    emu: KubeEmulator,
    kube: KubeApi,
    which: Iterable[int],
    change: Callable[[dict[str, Any], int], dict[str, Any]],
) -> list[int]:
    """Make ``kube`` see another writer: right after its reads number ``which`` (1, 2, ...) of a Secret,
    the Secret's metadata is replaced by ``change(secret, read)``. Returns the list of reads so far."""
    reads: list[int] = []
    targets = set(which)
    read_secret = kube.read_secret

    async def read_then_changed_outside(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(len(reads) + 1)
        seen = await read_secret(namespace, name)
        if len(reads) in targets:
            current = secret(emu, name) or {}
            emu.apply({**current, "metadata": change(current, len(reads))})
        return seen

    kube.read_secret = read_then_changed_outside  # type: ignore[method-assign]
    return reads


async def test_writes_over_an_outside_change_are_retried(emu: KubeEmulator, kube: KubeApi) -> None:
    """Another writer changes the Secret between our read and our patch: the stale resourceVersion
    gets a 409, and the write is redone on what is there now (the other writer's change kept)."""
    db = owner(emu)
    await kube.write_connection_secret(namespace=NS, name="db-conn", owner=db, data=None, annotations={})

    def annotate(current: dict[str, Any], read: int) -> dict[str, Any]:
        annotations = {**(current["metadata"].get("annotations") or {}), f"outside-{read}": "x"}
        return {**current["metadata"], "annotations": annotations}

    reads = changed_after_reads(emu, kube, (1, 3), annotate)
    await kube.write_connection_secret(namespace=NS, name="db-conn", owner=db, data={"password": "pw"}, annotations={})
    assert reads == [1, 2]
    await kube.set_secret_finalizer(NS, "db-conn", "example.com/f", present=True)
    assert len(reads) == 4
    stored = secret(emu, "db-conn") or {}
    assert decoded(stored) == {"password": "pw"} and stored["metadata"]["finalizers"] == ["example.com/f"]
    assert {"outside-1", "outside-3"} <= set(stored["metadata"]["annotations"])


async def test_a_secret_being_deleted_keeps_the_finalizers_it_has_and_takes_no_new_one(
    emu: KubeEmulator, kube: KubeApi
) -> None:
    emu.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
               "stringData": {"keyId": "k"}})  # fmt: skip
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/held", present=True) is True
    emu.delete("v1", "Secret", "creds", NS)  # stays: a finalizer holds it
    assert (secret(emu, "creds") or {})["metadata"].get("deletionTimestamp")
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/held", present=True) is True
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/new", present=True) is False
    assert (secret(emu, "creds") or {})["metadata"]["finalizers"] == ["example.com/held"]
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/held", present=False) is False
    assert secret(emu, "creds") is None
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/held", present=True) is False


async def test_a_finalizer_write_outlasts_a_run_of_outside_conflicts(emu: KubeEmulator, kube: KubeApi) -> None:
    """Somebody else rewrites the Secret between every read and patch of ours, six times running: the
    change is retried after growing waits, and lands once the other writer pauses."""
    emu.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
               "stringData": {"keyId": "k"}})  # fmt: skip

    def relabel(current: dict[str, Any], read: int) -> dict[str, Any]:
        return {**current["metadata"], "labels": {"rotation": str(read)}}

    reads = changed_after_reads(emu, kube, range(1, 7), relabel)
    assert await kube.set_secret_finalizer(NS, "creds", "example.com/f", present=True) is True
    assert len(reads) == 7
    stored = secret(emu, "creds") or {}
    assert stored["metadata"]["finalizers"] == ["example.com/f"] and stored["metadata"]["labels"]["rotation"] == "6"
