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
``/version``); OpenAPI v3 (``/openapi/v3`` and one document per group/version, with the CRDs'
schemas, so ``kubectl apply``/``create``/``replace`` and Helm validate through the server and
``kubectl explain`` works: :mod:`.openapi`); namespaces, secrets (``stringData`` → base64 ``data``,
type ``Opaque``), configmaps, serviceaccounts, services (cluster IPs and node ports are assigned), pods (storage
only), core/v1 events and ``events.k8s.io/v1`` events over the same storage (converted:
:mod:`.conversions`), leases, ``apps/v1`` deployments, RBAC roles/clusterroles and their bindings,
``admissionregistration.k8s.io/v1`` ValidatingAdmissionPolicy(+Binding) (stored, not evaluated),
CRDs (creating one serves its resources at once, also at runtime); custom resources: create (201,
409 AlreadyExists, ``generateName``), get, list (paging, ``<Kind>List``), watch
(ADDED/MODIFIED/DELETED/BOOKMARK, ``resourceVersion`` resume, 410 Gone, ``timeoutSeconds``,
``sendInitialEvents``), PUT, JSON merge patch, JSON patch (a failed ``test`` is 422), server-side
apply (``application/apply-patch+yaml``, field managers, ``managedFields`` for every write, 409
conflicts listing the fields, ``force``: :mod:`.fields`), delete and deletecollection;
``resourceVersion`` (cluster-wide), ``uid``, ``generation`` (spec changes only),
``creationTimestamp``; the ``status`` subresource kept apart from the main resource; optimistic
concurrency (409 Conflict); finalizers and ``deletionTimestamp``; ownerReference garbage collection
(background, foreground, orphan); namespace termination; label and field selectors (also on
watches: objects entering/leaving a selection are ADDED/DELETED); structural-schema pruning,
``fieldValidation=Strict`` (unknown fields of custom resources are a 400), OpenAPI schema and CEL
``x-kubernetes-validations`` (with ``oldSelf``), answered as 422 ``Status`` objects worded like the
real server; ``dryRun=All``; the ``Table`` form of get/list/watch (kubectl's columns: a CRD's
``additionalPrinterColumns``, the built-ins' usual ones: :mod:`.tables`); request bodies in JSON,
YAML, and protobuf for the built-ins kubectl's typed ``create`` and Helm's release storage send
(Namespace, Secret, ConfigMap, ServiceAccount, Service, RBAC, DeleteOptions: :mod:`.protobuf`;
answers are always JSON). Real kubectl 1.35 and helm 4.1 run against it with default flags (tests/clients).

Not emulated:

- authentication, authorization and RBAC enforcement (``emu.calls`` records each request as an
  RBAC verb and resource so tests can check them against the chart's Roles instead);
- admission: webhooks, ValidatingAdmissionPolicy evaluation, defaulting from CRD schemas,
  LimitRanges/quotas;
- controllers: no pods are started for Deployments (status stays empty, ``READY 0/1``), no
  endpoints, no service proxying, no ServiceAccount tokens, no scheduling;
- ``/openapi/v2`` (client-go asks for it only in protobuf, and only when v3 is missing) and
  field-level OpenAPI schemas of built-in kinds (``kubectl explain secret`` shows the top level
  only, kinds with a ``spec`` have no schema); strict validation of built-in kinds' fields;
- protobuf bodies for kinds other than those listed above (``kubectl create deployment|job|cronjob``
  get a 415), and protobuf or CBOR answers;
- subresources other than ``status`` (``scale``, ``exec``, ``logs``, ``portforward``, ``eviction``),
  so ``kubectl scale``, ``logs``, ``exec`` fail;
- most strategic-merge-patch list strategies (for built-ins it is a merge patch that merges
  ``metadata.finalizers`` and ``ownerReferences`` like the real one; for custom resources it is
  refused with 415, as on a real server); server-side apply's per-version conversion of field sets,
  atomic/granular map types, and the ``managedFields: [{}]`` reset (managedFields sent are kept as
  given);
- API versions other than the ones listed, aggregated APIs, CRD conversion webhooks, the
  ``/apis`` aggregated discovery format (clients fall back to the per-group lists), watch-list
  streaming beyond ``sendInitialEvents``, and persistence (everything is in memory).

Requires the ``emulator`` extra (kmock, jsonschema, cel-python).
"""

from kubeemu.errors import ApiError
from kubeemu.handler import ApiCall
from kubeemu.kubeconfig import kubeconfig_dict, write_kubeconfig
from kubeemu.server import KubeEmulator
from kubeemu.validation import validate_custom_resource

__all__ = [
    "ApiCall",
    "ApiError",
    "KubeEmulator",
    "kubeconfig_dict",
    "validate_custom_resource",
    "write_kubeconfig",
]
