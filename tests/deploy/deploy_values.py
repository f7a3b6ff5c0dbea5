"""Named value sets the chart is rendered with in the tests."""

from __future__ import annotations

from typing import Any

# Plainly fake credentials: they only travel into a rendered Secret in the test's own process.
FAKE_CREDENTIALS = {"keyId": "test-key-id", "keySecret": "test-key-secret", "organizationId": "test-org"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespace-scoped": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "observability": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "services": {"interval": "2m"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}, "notReadyFor": "30m"},
            "grafanaDashboard": {"enabled": True},
        }
    },
    "existing-credentials": {"credentials": {"existingSecret": "clickhouse-cloud-api"}},
    "created-credentials": {"credentials": {"create": FAKE_CREDENTIALS}},
    "namespace-scoped-credentials": {
        "watchNamespaces": ["team-a"],
        "credentials": {"existingSecret": "clickhouse-cloud-api"},
    },
    "peering-standby": {"peering": {"enabled": True}, "replicaCount": 2},
    "peering-namespace-scoped": {"peering": {"enabled": True}, "watchNamespaces": ["team-a", "team-b"]},
    "metrics-off": {"metrics": {"enabled": False}, "config": {"logFormat": "text"}},
    "tuned": {
        "config": {
            "apiTimeout": 20,
            "apiUrl": "http://clickhouse-api-proxy.infra.svc:8080/v1",
            "defaultDeletionPolicy": "Orphan",
            "pollInterval": 600,
            "pollIntervalActive": 20,
            "apiRateLimit": 5,
        },
        "image": {"repository": "registry.example.com/platform/mpg-operator", "tag": "0.1.0-rc1"},
        "imagePullSecrets": [{"name": "registry-pull"}],
        "podAnnotations": {"example.com/owner": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "extraEnv": [{"name": "EXAMPLE_EXTRA", "value": "yes"}],
    },
}
