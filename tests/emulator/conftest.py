"""Fixtures for the Kubernetes emulator tests: a running emulator and API clients."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kmock")
pytest.importorskip("celpy")

import kubernetes  # noqa: E402
from kubeemu_testlib import WIDGET_CRD  # noqa: E402

from kubeemu import KubeEmulator  # noqa: E402


@pytest.fixture
def emu() -> Iterator[KubeEmulator]:
    with KubeEmulator(
        crds=[copy.deepcopy(WIDGET_CRD)], namespaces=["default", "other"], bookmark_interval=0.5
    ) as emulator:
        yield emulator
        assert emulator.server_errors == []


@pytest.fixture
def kubeconfig(emu: KubeEmulator, tmp_path: Path) -> Path:
    return emu.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def custom(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)
