"""mpg-operator: a Kubernetes operator for ClickHouse Cloud Managed Postgres services."""

__version__ = "0.1.0"
