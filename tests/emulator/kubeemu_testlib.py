"""Shared test data for the Kubernetes emulator tests: a small CRD with schema and CEL rules."""

from __future__ import annotations

from typing import Any

GROUP, VERSION, PLURAL, KIND = "example.com", "v1", "widgets", "Widget"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": KIND, "shortNames": ["wd"]},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["region"],
                                "properties": {
                                    "region": {
                                        "type": "string",
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "region is immutable"}
                                        ],
                                    },
                                    "tier": {"type": "string", "enum": ["small", "large"]},
                                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.replicas) || self.replicas <= 3 || self.tier == 'large'",
                                        "message": "more than 3 replicas need the large tier",
                                    }
                                ],
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A Widget body."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"region": "eu-west-1", **spec},
    }
