"""Operator-wide settings, from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from mpg_operator.cloud.config import ClientSettings
from mpg_operator.reconcile.desired import OperatorDefaults
from mpg_operator.resource import DeletionPolicy


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator needs besides each resource's own spec.

    ==================================== =============================================== ==========
    ``MPG_DEFAULT_CREDENTIALS_SECRET``    ``namespace/name`` of the fallback API-key Secret (none)
    ``MPG_DEFAULT_DELETION_POLICY``       ``Delete`` or ``Orphan``                         ``Delete``
    ``MPG_POLL_INTERVAL``                 seconds between passes in steady state            ``300``
    ``MPG_POLL_INTERVAL_ACTIVE``          seconds between passes while a change is in flight ``15``
    ``MPG_LIST_MAX_AGE``                  seconds between LISTs of an organization          ``30``
    ``MPG_LIST_FAST_INTERVAL``            the same while a change is in flight, idle key    ``2.5``
    ``MPG_MAX_CONCURRENT_PASSES``         first passes of resources at once (0: no bound)  ``32``
    ``MPG_CREATE_GRACE``                  seconds an unanswered create may take to be listed ``60``
    ``MPG_UPDATE_CONFIRM``                seconds an update must keep showing to count      ``15``
    ==================================== =============================================== ==========

    API URL, timeouts and rate limit: see :class:`~mpg_operator.cloud.config.ClientSettings`.
    """

    client: ClientSettings = field(default_factory=ClientSettings)
    defaults: OperatorDefaults = field(default_factory=OperatorDefaults)
    default_credentials_secret: tuple[str, str] | None = None
    poll_interval: float = 300.0
    poll_interval_active: float = 15.0
    list_max_age: float = 30.0
    list_fast_interval: float = 2.5
    create_grace: float = 60.0
    update_confirm: float = 15.0
    config_resync: float = 3600.0
    jitter: float = 0.2
    max_concurrent_passes: int = 32

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        secret = env.get("MPG_DEFAULT_CREDENTIALS_SECRET", "").strip()
        default_secret: tuple[str, str] | None = None
        if secret:
            namespace, sep, name = secret.partition("/")
            if not sep or not namespace or not name:
                raise ValueError("MPG_DEFAULT_CREDENTIALS_SECRET must be 'namespace/name'")
            default_secret = (namespace, name)
        policy = env.get("MPG_DEFAULT_DELETION_POLICY", "").strip() or DeletionPolicy.DELETE.value
        if policy not in (DeletionPolicy.DELETE, DeletionPolicy.ORPHAN):
            raise ValueError("MPG_DEFAULT_DELETION_POLICY must be Delete or Orphan")

        def seconds(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            value = float(raw) if raw else default
            if value <= 0:
                raise ValueError(f"{name} must be > 0")
            return value

        return cls(
            client=ClientSettings.from_env(env),
            defaults=OperatorDefaults(deletion_policy=policy),
            default_credentials_secret=default_secret,
            poll_interval=seconds("MPG_POLL_INTERVAL", 300.0),
            poll_interval_active=seconds("MPG_POLL_INTERVAL_ACTIVE", 15.0),
            list_max_age=seconds("MPG_LIST_MAX_AGE", 30.0),
            list_fast_interval=seconds("MPG_LIST_FAST_INTERVAL", 2.5),
            create_grace=seconds("MPG_CREATE_GRACE", 60.0),
            update_confirm=seconds("MPG_UPDATE_CONFIRM", 15.0),
            config_resync=seconds("MPG_CONFIG_RESYNC", 3600.0),
            max_concurrent_passes=_count(env, "MPG_MAX_CONCURRENT_PASSES", 32),
        )
