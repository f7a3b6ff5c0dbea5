"""Configuration: spec.pgConfig and spec.pgBouncerConfig against the service's ``/config``.

Rules:

* Values are compared as strings: the API returns them so.
* Keys the spec never named (set in the console, inherited by a replica) are left alone; a key
  removed from the spec is removed from the service (status remembers which keys the resource
  manages). The configuration is replaced whole (POST), so a removal is possible at all.
* The API may drop a key with a 200 (unknown parameter, invalid value): after every write the
  configuration is read again, and a key it did not keep is reported and not sent again until the
  spec changes. Never a loop.
* Sending is marked in status first: after a crash between the request and the record of its
  answer, the same configuration is sent again (a replace is safe to repeat) to learn again whether
  it needs a restart.
* Whether a restart is needed is the API's word (the answer's ``message``); under
  ``restartPolicy: OnConfigChange`` the restart is a state command with the token
  ``config-<digest>``, so it is sent at most once per configuration (:mod:`.commands`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mpg_operator.cloud.models import PostgresConfig
from mpg_operator.reconcile.desired import Desired
from mpg_operator.reconcile.model import (
    Action,
    ApplyConfiguration,
    Condition,
    Event,
    EventReason,
    Observed,
    Reason,
    parse_time,
    rfc3339,
)
from mpg_operator.resource import ConfigurationStatus, ManagedPostgresStatus, RestartPolicy

CONFIG_RESYNC = timedelta(hours=1)
"""How often a configured service's configuration is read again to find changes made elsewhere."""

_RESTART_LIST = re.compile(r"restart[^:]*:\s*([A-Za-z0-9_,\s]+)")


def restart_parameters(message: str | None) -> list[str] | None:
    """The parameters the API says need a restart, from an answer's ``message``; None when none do.

    The API documents the message only as informational text ("The changes in the following
    parameters require a database restart to take effect: max_connections. ..."): any mention of a
    restart counts, the list is best effort."""
    if not message or "restart" not in message.lower():
        return None
    match = _RESTART_LIST.search(message)
    names = [n.strip() for n in match.group(1).split(",")] if match else []
    return sorted({n for n in names if n}) or ["(see the API's message)"]


def restart_token(digest: str) -> str:
    """The restart command token for a configuration: at most one restart per configuration."""
    return f"config-{digest}"


def _record(status: ManagedPostgresStatus) -> ConfigurationStatus:
    return status.configuration or ConfigurationStatus()


def configured(desired: Desired, status: ManagedPostgresStatus) -> bool:
    """The resource has configuration to apply, or keys it applied earlier to remove."""
    record = _record(status)
    return bool(desired.pg_config or desired.pg_bouncer_config or record.pg_keys or record.pg_bouncer_keys)


def needs_read(
    desired: Desired, status: ManagedPostgresStatus, now: datetime, resync: timedelta = CONFIG_RESYNC
) -> bool:
    """Whether this pass must GET the configuration: the spec's changed, a write waits to be
    verified, or the last check is older than ``resync``. Unconfigured resources cost nothing."""
    if not configured(desired, status):
        return False
    record = _record(status)
    if record.digest != desired.config_digest or record.sending_digest:
        return True
    verified = parse_time(record.verified_at)
    return verified is None or now - verified >= resync


@dataclass
class ConfigurationPlan:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, object] = field(default_factory=dict)
    problem: Condition | None = None
    events: list[Event] = field(default_factory=list)
    in_flight: bool = False
    restart_required: Condition | None = None


def _as_strings(values: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def plan_configuration(
    desired: Desired, observed: Observed, service_id: str, rejected: Condition | None = None
) -> ConfigurationPlan:
    """What to do about the configuration of a running service (``observed.remote_config`` is
    None when this pass did not read it: then only what status says is reported). ``rejected``:
    the API refused a request of this generation lately; the configuration is not sent again
    until the spec changes (or the retry time has passed)."""
    status = observed.status
    record = _record(status)
    digest = desired.config_digest
    out = ConfigurationPlan(restart_required=restart_condition(desired, status))
    remote = observed.remote_config
    if remote is None:
        out.in_flight = configured(desired, status) and (record.digest != digest or record.verified_at is None)
        if record.digest == digest and record.dropped_keys:
            out.problem = _dropped(record.dropped_keys)
        return out

    pg_remote = _as_strings(dict(remote.pg_config))
    bouncer_remote = _as_strings(dict(remote.pg_bouncer_config))
    differs = [f"pgConfig.{k}" for k, v in sorted(desired.pg_config.items()) if pg_remote.get(k) != v] + [
        f"pgBouncerConfig.{k}" for k, v in sorted(desired.pg_bouncer_config.items()) if bouncer_remote.get(k) != v
    ]
    stale = [f"pgConfig.{k}" for k in record.pg_keys or [] if k not in desired.pg_config and k in pg_remote] + [
        f"pgBouncerConfig.{k}"
        for k in record.pg_bouncer_keys or []
        if k not in desired.pg_bouncer_config and k in bouncer_remote
    ]
    spec_changed = record.digest != digest
    unanswered = record.sending_digest == digest
    verifying = not spec_changed and record.verified_at is None
    now = rfc3339(observed.now)

    if verifying and not unanswered:
        # The first read after a write: what the service does not show, the API did not keep.
        dropped = sorted(set(differs + stale))
        out.status["configuration"] = _status(record, verified_at=now, dropped_keys=dropped or None)
        if dropped:
            out.problem = _dropped(dropped)
            out.events.append(Event.warning(EventReason.CONFIGURATION_REJECTED, out.problem.message))
        return out
    if not spec_changed and not unanswered:
        # A periodic check: a change made elsewhere to a managed key is put back (once per check;
        # keys the API dropped before are not sent again).
        drift = sorted(set(differs + stale) - set(record.dropped_keys or []))
        if not drift:
            out.status["configuration"] = _status(record, verified_at=now)
            if record.dropped_keys:
                out.problem = _dropped(record.dropped_keys)
            return out
        differs = drift
    if not differs and not stale and not unanswered:
        out.status["configuration"] = _status(
            record,
            digest=digest,
            pg_keys=sorted(desired.pg_config) or None,
            pg_bouncer_keys=sorted(desired.pg_bouncer_config) or None,
            verified_at=now,
            dropped_keys=None,
        )
        return out
    if rejected is not None:
        out.problem = rejected
        return out
    removed_pg = {k for k in record.pg_keys or [] if k not in desired.pg_config}
    removed_bouncer = {k for k in record.pg_bouncer_keys or [] if k not in desired.pg_bouncer_config}
    body = PostgresConfig(
        pg_config={**{k: v for k, v in pg_remote.items() if k not in removed_pg}, **desired.pg_config},
        pg_bouncer_config={
            **{k: v for k, v in bouncer_remote.items() if k not in removed_bouncer},
            **desired.pg_bouncer_config,
        },
    )
    out.actions.append(
        ApplyConfiguration(
            service_id=service_id,
            config=body,
            digest=digest,
            pg_keys=tuple(sorted(desired.pg_config)),
            pg_bouncer_keys=tuple(sorted(desired.pg_bouncer_config)),
            changed=tuple(sorted(set(differs + stale))) or ("(unchanged: sent again after an interrupted write)",),
        )
    )
    out.in_flight = True
    return out


def applied_status(
    status: ManagedPostgresStatus, action: ApplyConfiguration, message: str | None, now: datetime
) -> dict[str, object]:
    """Status after the API accepted ``action``: verification pending, and whether a restart is due."""
    record = _record(status)
    needs_restart = restart_parameters(message)
    fields: dict[str, object] = {
        "configuration": _status(
            record,
            digest=action.digest,
            sending_digest=None,
            pg_keys=list(action.pg_keys) or None,
            pg_bouncer_keys=list(action.pg_bouncer_keys) or None,
            applied_at=rfc3339(now),
            verified_at=None,
            dropped_keys=None,
            restart_parameters=sorted(
                set(needs_restart or []) | set(record.restart_parameters or [] if status.pending_restart else [])
            )
            or None,
        )
    }
    if needs_restart:
        fields["pendingRestart"] = True
    return fields


def restart_condition(desired: Desired, status: ManagedPostgresStatus) -> Condition | None:
    """The RestartRequired condition: True while a configuration waits for a restart."""
    if status.pending_restart:
        params = ", ".join(_record(status).restart_parameters or []) or "some parameters"
        if desired.restart_policy == RestartPolicy.ON_CONFIG_CHANGE:
            how = "restartPolicy is OnConfigChange: the operator restarts the service once"
        else:
            how = "restartPolicy is Never: restart with the annotation clickhouse.cloud/restart=<new token>"
        return Condition.true(Reason.RESTART_PENDING, f"{params} take effect after a restart; {how}")
    if configured(desired, status) or any(c.type == "RestartRequired" for c in status.conditions or []):
        return Condition.false(Reason.RESTART_NOT_REQUIRED, "No configuration change waits for a restart")
    return None


def _dropped(keys: list[str]) -> Condition:
    return Condition.false(
        Reason.TERMINAL_CONFIGURATION_REJECTED,
        f"The API accepted the configuration but did not keep {', '.join(keys)} (an unknown parameter or a value "
        "it does not accept); not sent again until the spec changes",
    )


def _status(record: ConfigurationStatus, **changes: object) -> dict[str, object]:
    """The configuration record as stored, with ``changes`` (a None value removes the field)."""
    stored = record.model_dump(by_alias=True, exclude_none=True)
    aliases = {name: info.alias or name for name, info in ConfigurationStatus.model_fields.items()}
    for name, value in changes.items():
        stored[aliases[name]] = value
    return {k: v for k, v in stored.items() if v is not None}
