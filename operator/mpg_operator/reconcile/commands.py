"""State commands (restart, switchover, promote) asked for by an annotation token or by the restart policy.

Each token is acted on at most once. The command is recorded in status as ``Sending`` before the
request and as ``Sent`` (or ``Failed``, ``Unknown``) with its answer; a pass that finds ``Sending``
follows a crash or a lost answer, and the command is not sent again (it may have happened): the
record turns ``Unknown`` and an event says how to ask again. The API acknowledges these commands
before doing them and shows no completion (a restart is ``running`` before and after), so nothing
more can be known; nothing else is sent while the service is not running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mpg_operator.cloud.models import HaType, PostgresServiceListItem, ServiceState, StateCommand
from mpg_operator.reconcile.configuration import restart_token
from mpg_operator.reconcile.desired import Desired
from mpg_operator.reconcile.model import Action, Condition, Event, EventReason, Observed, Reason, SendCommand, rfc3339
from mpg_operator.resource import (
    ANNOTATION_PROMOTE,
    ANNOTATION_RESTART,
    ANNOTATION_SWITCHOVER,
    CommandRecord,
    RestartPolicy,
)

COMMANDS = (StateCommand.RESTART, StateCommand.SWITCHOVER, StateCommand.PROMOTE)
ANNOTATIONS = {
    StateCommand.RESTART: ANNOTATION_RESTART,
    StateCommand.SWITCHOVER: ANNOTATION_SWITCHOVER,
    StateCommand.PROMOTE: ANNOTATION_PROMOTE,
}


class CommandPhase(StrEnum):
    SENDING = "Sending"
    SENT = "Sent"
    UNKNOWN = "Unknown"
    FAILED = "Failed"


@dataclass
class CommandsPlan:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, object] = field(default_factory=dict)
    problems: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    waiting: bool = False


def stored_records(observed: Observed) -> dict[str, dict[str, object]]:
    commands = observed.status.commands
    if commands is None:
        return {}
    return {k: v for k, v in commands.model_dump(by_alias=True, exclude_none=True).items() if v}


def wanted_token(desired: Desired, observed: Observed, command: StateCommand, done: str | None) -> str | None:
    """The token to act on: the annotation's, or for a restart the configuration's under OnConfigChange."""
    token = desired.command_tokens.get(command.value)
    if token and token != done:
        return token
    status = observed.status
    if (
        command == StateCommand.RESTART
        and status.pending_restart
        and desired.restart_policy == RestartPolicy.ON_CONFIG_CHANGE
        and status.configuration is not None
        and status.configuration.digest
    ):
        config_token = restart_token(status.configuration.digest)
        if config_token != done:
            return config_token
    return None


def plan_commands(desired: Desired, observed: Observed, remote: PostgresServiceListItem, *, busy: bool) -> CommandsPlan:
    """Commands to send now; ``busy``: an update is still being applied (nothing is sent meanwhile)."""
    out = CommandsPlan()
    records = stored_records(observed)
    changed = False
    for command in COMMANDS:
        record = records.get(command.value)
        done = str(record["token"]) if record else None
        if record and record.get("phase") == CommandPhase.SENDING:
            records[command.value] = command_record(done or "", CommandPhase.UNKNOWN, rfc3339(observed.now))
            changed = True
            out.events.append(
                Event.warning(
                    EventReason.COMMAND_OUTCOME_UNKNOWN,
                    f"The {command.value} for token {done} was being sent when the operator stopped or lost the "
                    f"answer; it may or may not have happened and is not sent again. To ask again, set "
                    f"{ANNOTATIONS[command]} to a new token",
                )
            )
        token = wanted_token(desired, observed, command, done)
        if token is None:
            continue
        refusal = _refusal(command, remote)
        if refusal:
            out.problems.append(Condition.false(Reason.TERMINAL_COMMAND_REFUSED, refusal))
            out.events.append(Event.warning(EventReason.COMMAND_REFUSED, refusal))
            continue
        if remote.state != ServiceState.RUNNING or busy or changed:
            # (after recording an unknown outcome, the next pass sends: one status record per pass)
            out.waiting = True
            continue
        out.actions.append(SendCommand(remote.id or "", command.value, token))
        out.waiting = True
    if changed:
        out.status["commands"] = records
    return out


def _refusal(command: StateCommand, remote: PostgresServiceListItem) -> str | None:
    """Why the API would accept the command and do nothing (it answers 200 to a switchover without a standby)."""
    if command == StateCommand.SWITCHOVER:
        if remote.is_primary is False:
            return "A switchover needs a primary with a standby; this service is a read replica. Remove the annotation"
        if (remote.ha_type or HaType.NONE) == HaType.NONE:
            return (
                f"A switchover needs a standby, and service {remote.id} has haType none (the API would answer 200 "
                f"and do nothing). Set spec.haType to async or sync first, or remove the {ANNOTATION_SWITCHOVER} "
                "annotation"
            )
    if command == StateCommand.PROMOTE and remote.is_primary is not False:
        return (
            f"Service {remote.id} is a primary, not a read replica: there is nothing to promote. Remove the "
            f"{ANNOTATION_PROMOTE} annotation"
        )
    return None


def command_record(token: str, phase: CommandPhase, at: str, message: str | None = None) -> dict[str, object]:
    """A command's status record."""
    return CommandRecord(token=token, phase=phase.value, at=at, message=message).model_dump(
        by_alias=True, exclude_none=True
    )
