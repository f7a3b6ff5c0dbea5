"""A local Kubernetes API server emulator, built on kmock — a stand-in for a cluster, NEVER production.

Used by the test-suite and ``mpg-operator demo`` where no kube-apiserver can be had. It serves the
parts of the API an operator uses, with the real server's semantics (resourceVersion, uid,
generation, status subresource, optimistic concurrency, finalizers, ownerReference garbage
collection, selectors, watches with bookmarks, CRD schema + CEL validation, Status errors), so that
kopf and the ``kubernetes`` client work against it unchanged. There is no authentication, RBAC,
admission, OpenAPI endpoint or server-side apply; requests are recorded (``emu.calls``) so tests can
check them against the Helm chart's RBAC instead.

Requires the ``emulator`` extra (kmock, jsonschema, cel-python).
"""

from mpg_operator.kubeemu.errors import ApiError
from mpg_operator.kubeemu.handler import ApiCall
from mpg_operator.kubeemu.kubeconfig import kubeconfig_dict, write_kubeconfig
from mpg_operator.kubeemu.server import KubeEmulator
from mpg_operator.kubeemu.validation import validate_custom_resource

__all__ = [
    "ApiCall",
    "ApiError",
    "KubeEmulator",
    "kubeconfig_dict",
    "validate_custom_resource",
    "write_kubeconfig",
]
