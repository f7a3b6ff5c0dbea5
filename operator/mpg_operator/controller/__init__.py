"""The operator: kopf handlers, Kubernetes I/O, and the reconcile pass around the pure core."""
