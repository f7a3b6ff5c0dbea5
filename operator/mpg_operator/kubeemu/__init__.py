"""A local Kubernetes API server emulator, built on kmock — a stand-in for a cluster, NEVER production.

Used by the test-suite and ``mpg-operator demo`` where no kube-apiserver can be had. It serves what
an operator uses, with the real server's semantics, so that kopf and the ``kubernetes`` client work
against it unchanged::

    with KubeEmulator(crds=[crd_dict], namespaces=["default"]) as emu:
        emu.write_kubeconfig(path)          # cluster/user/context "kubeemu", plain HTTP, no auth
        emu.apply(manifest)                 # kubectl-apply-like, validated
        emu.wait_for(lambda: (emu.get("v1", "Secret", "x") or {}).get("data"))
        assert all(rbac_allows(call) for call in emu.calls)   # ApiCall(verb, api_group, ...)

Emulated: discovery (``/api``, ``/apis``, group/version resource lists with ``<plural>/status``,
``/version``); namespaces, secrets (``stringData`` → base64 ``data``, type ``Opaque``), configmaps,
serviceaccounts, core and ``events.k8s.io`` events, leases, CRDs (creating one serves its
resources); custom resources: create (201, 409 AlreadyExists, ``generateName``), get, list (paging,
``<Kind>List``), watch (ADDED/MODIFIED/DELETED/BOOKMARK, ``resourceVersion`` resume, 410 Gone,
``timeoutSeconds``, ``sendInitialEvents``), PUT, JSON merge patch, JSON patch (a failed ``test`` is
422), delete and deletecollection; ``resourceVersion`` (cluster-wide), ``uid``, ``generation`` (spec
changes only), ``creationTimestamp``; the ``status`` subresource kept apart from the main resource;
optimistic concurrency (409 Conflict); finalizers and ``deletionTimestamp``; ownerReference garbage
collection (background, foreground, orphan); namespace termination; label and field selectors (also
on watches: objects entering/leaving a selection are ADDED/DELETED); structural-schema pruning,
OpenAPI schema and CEL ``x-kubernetes-validations`` (with ``oldSelf``), answered as 422 ``Status``
objects worded like the real server; ``dryRun=All``.

Not emulated: authentication and RBAC (``emu.calls`` records each request as an RBAC verb and
resource so tests can check them against the chart's Roles instead), admission webhooks, defaulting,
server-side apply, most strategic-merge-patch list strategies (for built-ins it is a merge patch
that merges ``metadata.finalizers`` and ``ownerReferences`` like the real one; for custom resources
it is refused with 415, as on a real server), protobuf bodies (so
``kubectl create`` of built-in kinds fails; ``kubectl get``, ``delete`` and ``apply --validate=false``
of custom resources work), OpenAPI documents (``helm install`` and kubectl's client-side validation
cannot run against it), pods and controllers.

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
