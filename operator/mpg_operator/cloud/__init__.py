"""Client for the ClickHouse Cloud OpenAPI (Managed Postgres). Knows nothing of Kubernetes."""

from mpg_operator.cloud.errors import *  # noqa: F401,F403
from mpg_operator.cloud.models import *  # noqa: F401,F403
