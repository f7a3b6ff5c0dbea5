"""The vocabulary shared by the pure core and the executor: what was observed, what to do, what
to report. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mpg_operator.cloud.models import PostgresConfig, PostgresServiceListItem
from mpg_operator.reconcile.connection import ObservedSecret
from mpg_operator.resource import ManagedPostgresStatus


class Reason(StrEnum):
    """Condition reasons. Those for which :attr:`is_terminal` holds need a change by the user."""

    AVAILABLE = "Available"
    CREATING = "Creating"
    UPDATING = "Updating"
    PROVISIONING = "Provisioning"
    UNAVAILABLE = "ServiceUnavailable"
    CREDENTIALS_PENDING = "PublishingCredentials"
    DELETING = "Deleting"
    RECONCILED = "ReconcileSuccess"
    API_ERROR = "ApiError"
    CREATE_PENDING = "CreatePending"
    CLAIMING = "ClaimingService"
    PAUSED = "ReconcilePaused"
    OBSERVING = "Observing"
    TERMINAL_INVALID_SPEC = "TerminalInvalidSpec"
    TERMINAL_IMMUTABLE = "TerminalImmutableFieldChanged"
    TERMINAL_CREDENTIALS = "TerminalCredentialsError"
    TERMINAL_PASSWORD = "TerminalInvalidPassword"
    TERMINAL_READ_REPLICA = "TerminalReadReplica"
    TERMINAL_SECRET_CONFLICT = "TerminalSecretConflict"
    TERMINAL_ORGANIZATION_CHANGED = "TerminalOrganizationChanged"
    TERMINAL_SERVICE_MISSING = "TerminalServiceMissing"
    TERMINAL_SERVICE_NOT_FOUND = "TerminalServiceNotFound"
    TERMINAL_SERVICE_OWNED = "TerminalServiceOwned"
    TERMINAL_ADOPTION_REQUIRED = "TerminalAdoptionRequired"
    TERMINAL_CONFIGURATION_REJECTED = "TerminalConfigurationRejected"
    TERMINAL_COMMAND_REFUSED = "TerminalCommandRefused"
    RESTART_PENDING = "PendingRestart"
    RESTART_NOT_REQUIRED = "NoRestartPending"
    QUOTA_EXCEEDED = "QuotaExceeded"
    # read replicas and restores
    WAITING_FOR_PRIMARY = "WaitingForPrimary"
    WAITING_FOR_BACKUP = "WaitingForBackup"
    WAITING_FOR_SOURCE = "WaitingForSource"
    WAITING_FOR_REPLICAS = "WaitingForReplicas"
    TERMINAL_SOURCE_ELSEWHERE = "TerminalSourceInOtherOrganization"
    TERMINAL_RESTORE_REFUSED = "TerminalRestoreRefused"

    @property
    def is_terminal(self) -> bool:
        """Needs a change by the user (the Argo CD health check reads these as Degraded)."""
        return self.value.startswith("Terminal") or self is Reason.QUOTA_EXCEEDED


class EventReason(StrEnum):
    """The fixed vocabulary of the Events the operator posts on a ManagedPostgres."""

    CREATED = "Created"
    ADOPTED = "Adopted"
    UPDATED = "Updated"
    CREDENTIALS_PUBLISHED = "CredentialsPublished"
    SECRET_UPDATED = "SecretUpdated"
    DELETE_REQUESTED = "DeleteRequested"
    DELETED = "Deleted"
    ORPHANED = "Orphaned"
    INVALID_SPEC = "InvalidSpec"
    CREDENTIALS_ERROR = "CredentialsError"
    API_ERROR = "ApiError"
    CREATE_FAILED = "CreateFailed"
    CREATE_OUTCOME_UNKNOWN = "CreateOutcomeUnknown"
    CREATE_RETRIED = "CreateRetried"
    SERVICE_MISSING = "ServiceMissing"
    DUPLICATE_SERVICES = "DuplicateServices"
    DELETION_BLOCKED = "DeletionBlocked"
    DELETION_SKIPPED = "DeletionSkipped"
    SECRET_CONFLICT = "SecretConflict"
    ADOPTION_REFUSED = "AdoptionRefused"
    PASSWORD_ROTATED = "PasswordRotated"
    PAUSED = "Paused"
    DELETION_PROTECTED = "DeletionProtected"
    CONFIGURATION_APPLIED = "ConfigurationApplied"
    CONFIGURATION_REJECTED = "ConfigurationRejected"
    RESTART_REQUIRED = "RestartRequired"
    COMMAND_SENT = "CommandSent"
    COMMAND_REFUSED = "CommandRefused"
    COMMAND_OUTCOME_UNKNOWN = "CommandOutcomeUnknown"
    # read replicas and restores
    WAITING_FOR_BACKUP = "WaitingForBackup"
    RESTORE_REFUSED = "RestoreRefused"
    REPLICA_RELEASED = "ReplicaReleased"
    DELETION_WAITING = "DeletionWaiting"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the resource."""

    type: EventType
    reason: EventReason
    message: str

    @classmethod
    def normal(cls, reason: EventReason, message: str) -> Event:
        return cls(EventType.NORMAL, reason, message)

    @classmethod
    def warning(cls, reason: EventReason, message: str) -> Event:
        return cls(EventType.WARNING, reason, message)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    """The decided part of a condition (the executor adds generation and transition time)."""

    status: ConditionStatus
    reason: Reason
    message: str

    @classmethod
    def true(cls, reason: Reason, message: str) -> Condition:
        return cls(ConditionStatus.TRUE, reason, message)

    @classmethod
    def false(cls, reason: Reason, message: str) -> Condition:
        return cls(ConditionStatus.FALSE, reason, message)

    @classmethod
    def unknown(cls, reason: Reason, message: str) -> Condition:
        return cls(ConditionStatus.UNKNOWN, reason, message)

    @property
    def is_true(self) -> bool:
        return self.status == ConditionStatus.TRUE


class PasswordMode(StrEnum):
    """What publishing the Secret does about the password."""

    KEEP = "keep"
    """The Secret's password is the one the API accepted last."""
    APPLY = "apply"
    """Set the Secret's password through the API (a user put it there, or it is not confirmed)."""
    GENERATE = "generate"
    """Write a new password to the Secret first, then set it through the API."""
    BRING = "bring"
    """Write the user's password (passwordSecretRef) to the Secret first, then set it through the API."""
    OBSERVED = "observed"
    """Observe only: publish what can be known; the user's password if they bring one, else none."""
    INHERIT = "inherit"
    """A read replica: publish its primary's current password (the API refuses to set one on a replica)."""
    CARRY = "carry"
    """The spec names another Secret than before: publish the password the API accepted last, from the
    Secret published before (nothing is sent to the API; the earlier Secret is left as it is)."""


@dataclass(frozen=True)
class LastRejection:
    """A terminal API rejection recorded in the Synced condition for the current generation."""

    reason: Reason
    message: str
    since: datetime | None


@dataclass(frozen=True)
class SourceResource:
    """The ManagedPostgres a read replica or a restore names, as read this pass."""

    name: str
    exists: bool
    deleting: bool = False
    service_id: str | None = None
    state: str | None = None
    """The source service's state: from the organization's LIST when it shows it, else its status."""
    listed: bool = False
    """The source service is in this resource's organization's LIST."""
    organization_id: str | None = None
    """The organization the source service lives in (its status)."""
    password: str | None = field(default=None, repr=False)
    """The source's current password, as its connection Secret holds it, when confirmed (replicas only)."""


@dataclass(frozen=True)
class Observed:
    """Everything one pass knows, read before planning."""

    now: datetime
    status: ManagedPostgresStatus
    remote: PostgresServiceListItem | None
    """The service, found by ``status.serviceId`` or else by the owner tag."""
    duplicates: tuple[str, ...] = ()
    """Other services that carry this resource's owner tag (never touched)."""
    secret: ObservedSecret | None = None
    previous_secret: ObservedSecret | None = None
    """The connection Secret status names, when the spec now names another one (a rename)."""
    confirmed_gone: bool = False
    """A GET of ``status.serviceId`` answered 404 (the LIST alone is not trusted for that)."""
    fetched_by_id: bool = False
    """``remote`` comes from a GET sent after this operator's last request for the resource."""
    snapshot_after_pending: bool = True
    """The LIST used was fetched after ``status.createPendingSince``."""
    snapshot_stale: bool = False
    """The LIST used was fetched before this operator's last request for the resource."""
    last_rejection: LastRejection | None = None
    organization_id: str | None = None
    """The organization of the API key the resource's credentials name now."""
    found_by: str = "id"
    """How ``remote`` was found: ``id`` (status.serviceId), ``tag`` (owner uid tag), ``adopt``
    (spec.serviceId) or ``reattach`` (a previous owner's namespace/name tags)."""
    previous_owner: str | None = None
    """The service's owner uid tag, when it names another resource than this one."""
    previous_owner_alive: bool = False
    """A ManagedPostgres with that uid exists in the cluster (such a service is never taken over, and
    one recorded in status that now carries it is no longer this resource's)."""
    claim_sent: bool = False
    """``remote`` was read back after this pass wrote this resource's owner tags to it (a claim)."""
    brought_password: str | None = None
    """The value of spec.passwordSecretRef, when set and readable."""
    brought_password_problem: str | None = None
    """Why spec.passwordSecretRef cannot be read."""
    remote_config: PostgresConfig | None = None
    """The service's configuration (GET /config), when this pass read it."""
    source: SourceResource | None = None
    """The primary of a read replica, or the ManagedPostgres a restore names."""
    source_service_listed: bool = False
    """spec.restoreFrom.serviceId is in the organization's LIST."""


class Action:
    """Base of the steps a plan asks the executor to take, in order."""


@dataclass(frozen=True)
class AdoptService(Action):
    """Record a service that carries this resource's owner tag as this resource's service."""

    service_id: str


@dataclass(frozen=True)
class ClaimService(Action):
    """Take a service found by spec.serviceId or by a previous owner's name: read it afresh, write this
    resource's owner tags to it, read it back, and plan again from what the API shows after that write.

    Claims of one service by resources of this operator are serialized, each reading the service after
    the previous claim: the first writes its tags, every later one finds a live owner and is refused.
    """

    service_id: str


@dataclass(frozen=True)
class CreateService(Action):
    """Claim the Secret, mark the create pending in status, POST, store the returned password.

    ``source_service_id``: create a read replica of it (``read_replica``) or restore it, instead of a
    new service."""

    source_service_id: str | None = None
    read_replica: bool = False


@dataclass(frozen=True)
class ConfirmGone(Action):
    """GET the recorded service id: a 404 confirms it is gone (never a LIST alone); any other
    answer replaces what the LIST showed (the LIST may predate this operator's last request)."""

    service_id: str


@dataclass(frozen=True)
class UpdateService(Action):
    """PATCH every mutable field, with the complete tag set."""

    service_id: str
    digest: str
    changed: tuple[str, ...]


@dataclass(frozen=True)
class PublishSecret(Action):
    """Write the connection Secret; fetch the endpoint (GET + CA) when it is not current."""

    service_id: str
    service_name: str
    refresh_endpoint: bool
    password: PasswordMode
    rotation_token: str | None = None
    """Record this clickhouse.cloud/rotate-password token once the password is changed."""


@dataclass(frozen=True)
class DeleteService(Action):
    service_id: str


@dataclass(frozen=True)
class ApplyConfiguration(Action):
    """Mark the configuration as being sent, replace it (POST /config), record the answer at once."""

    service_id: str
    config: PostgresConfig
    """The complete configuration: the spec's keys over the keys set outside this resource."""
    digest: str
    pg_keys: tuple[str, ...]
    pg_bouncer_keys: tuple[str, ...]
    changed: tuple[str, ...]


@dataclass(frozen=True)
class SendCommand(Action):
    """Record the command as being sent, send it once (PATCH /state), record the outcome."""

    service_id: str
    command: str
    token: str


@dataclass
class Plan:
    """What to do, what to report, and when to look again."""

    actions: list[Action] = field(default_factory=list)
    status: dict[str, object] = field(default_factory=dict)
    ready: Condition | None = None
    synced: Condition | None = None
    fully_applied: bool = False
    active: bool = True
    """True while something is in flight: look again soon."""
    events: list[Event] = field(default_factory=list)
    release_finalizer: bool = False
    restart_required: Condition | None = None
    """The RestartRequired condition (None keeps the stored one)."""


def rfc3339(moment: datetime, *, precise: bool = False) -> str:
    """A UTC time as status stores it; ``precise`` keeps microseconds (for a time that is
    compared with the send time of a LIST, where a whole second is too coarse)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from status, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
