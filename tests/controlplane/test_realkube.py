"""The real-server sandbox (``support.realkube.RealKube``) touches only namespaces the tests made."""

from __future__ import annotations

import kubernetes
import pytest
from support import realkube

from mpg_operator import crd as crd_module


def test_a_namespace_the_tests_did_not_make_is_never_emptied_or_deleted(real_kubeconfig, tmp_path):
    api = realkube.client(real_kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    with realkube.fresh_namespace(api, "someones") as namespace:
        core.create_namespaced_secret(namespace, {"metadata": {"name": "theirs", "finalizers": ["example.com/keep"]}})
        kube = realkube.RealKube(real_kubeconfig, crd_module.all_crds(), (namespace,), tmp_path)
        with pytest.raises(RuntimeError, match="was not made by the tests"):
            kube.start()
        assert core.read_namespace(namespace).metadata.deletion_timestamp is None
        secret = core.read_namespaced_secret("theirs", namespace)
        assert secret.metadata.finalizers == ["example.com/keep"]
        core.patch_namespaced_secret("theirs", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ValueError, match="not default"):
        realkube.RealKube(real_kubeconfig, crd_module.all_crds(), ("default",), tmp_path)
