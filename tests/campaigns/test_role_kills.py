"""PostgresRole passwords under SIGKILL (issue 18): the operator, as its own process, is killed
(SIGKILL) a set delay after the role's Secret write reaches the Kubernetes API, so after the new
password is in the Secret and before, during or after ``ALTER ROLE ... PASSWORD``; on the role's
creation and on a rotation. Started again, the role must end Ready with its password confirmed
(the Secret's version is the status's) with the very password the Secret held when the operator
died, and the Secret's URI must connect to the real PostgreSQL; a rotation must end with a password
other than the one before it, which must no longer connect.

Reduced: 3 delays; full (``MPG_CAMPAIGN=full``): 7.
"""

from __future__ import annotations

from typing import Any

import pytest
from campaign_harness import FULL, NS, TIMEOUT, Campaign, KillPoint, own_campaign, unique
from support import e2e

from mpg_operator.reconcile.connection import ANN_PASSWORD_VERSION
from mpg_operator.resource import ANNOTATION_ROTATE_PASSWORD, API_VERSION
from mpg_operator.resource_sql import ROLE_KIND

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance, pytest.mark.timeout(TIMEOUT)]

DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5) if FULL else (0.0, 0.05, 0.3)
SECRET_WRITTEN = KillPoint(
    "role/secret-written", "password", "kube", "*", plural="secrets", what="a write of the role's Secret arrives"
)
# A rotation's pending password is written as a PATCH of the existing Secret (after a refused POST).
SECRET_PATCHED = KillPoint(
    "role/secret-patched", "password", "kube", "PATCH", plural="secrets", what="a PATCH of the role's Secret arrives"
)


@pytest.fixture(scope="module")
def c(produced: Any, live_campaigns: list[Campaign]) -> Any:
    with own_campaign(produced, live_campaigns) as campaign:
        campaign.credentials("role-key", campaign.new_key())
        campaign.apply(campaign.manifest("roles-db", "role-key"))
        campaign.wait_for(lambda: campaign.is_ready("roles-db"), timeout=120, what="roles-db Ready")
        yield campaign


def role_manifest(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": ROLE_KIND,
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": {"serviceRef": {"name": "roles-db"}, "roleName": name.replace("-", "_"), "login": True},
    }


def confirmed(c: Campaign, name: str, token: str | None = None) -> bool:
    """Ready, and the Secret's password is the one the status confirms (and the rotation is done)."""
    role = c.kube.get(API_VERSION, ROLE_KIND, name, NS) or {}
    status = role.get("status") or {}
    ready = any(x["type"] == "Ready" and x["status"] == "True" for x in status.get("conditions") or [])
    raw = c.raw_secret(f"{name}-connection") or {}
    version = ((raw.get("metadata") or {}).get("annotations") or {}).get(ANN_PASSWORD_VERSION)
    rotated = token is None or status.get("passwordRotationToken") == token
    return ready and rotated and bool(version) and version == status.get("passwordVersion")


def kill_at_the_secret_write(
    c: Campaign, name: str, delay: float, change: Any, point: KillPoint = SECRET_WRITTEN
) -> str:
    """Arm the kill, make ``change``, wait for the kill, start the operator again; returns the
    password the Secret held when the operator died (the one it must end with)."""
    c.kill_switch.arm(point, delay, name)
    change()
    try:
        assert c.kill_switch.fired.wait(60), f"{name}: the operator was never killed (no Secret write seen)"
    finally:
        c.kill_switch.disarm()
    c.operator.wait_dead()
    held = (c.secret(f"{name}-connection") or {}).get("password", "")
    c.operator.start()
    return held


def ends_with_the_held_password(final: str | None, held: str, before: str | None, what: str) -> None:
    """The password the role ends with is the one its Secret held when the operator died, unless the
    write the kill interrupted never landed (the Secret then held no password, or the one before the
    rotation): a new one is then made, and only then. Values are never printed."""
    if held and held != before:
        e2e.assert_same_secret(final, held, f"{what}: the password the Secret held at the kill")
    else:
        assert final, f"{what}: no password"
        replaced = final != before
        assert replaced, f"{what}: the password before the rotation was kept"


@pytest.mark.parametrize("delay", DELAYS)
def test_a_role_killed_at_its_secret_write_ends_with_a_working_password(c: Campaign, delay: float) -> None:
    name = unique("app")
    held = kill_at_the_secret_write(c, name, delay, lambda: c.apply(role_manifest(name)))
    c.wait_for(lambda: confirmed(c, name), timeout=120, what=f"{name} Ready and confirmed after the kill")
    created = c.secret(f"{name}-connection") or {}
    ends_with_the_held_password(created.get("password"), held, None, f"{name} (creation, {delay} s)")
    ok, why = c.connects(created.get("uri", ""))
    assert ok, f"{name} (killed {delay} s after its Secret write, creation): {why}"

    token = f"rotate-{name}"
    rotate = role_manifest(name, {ANNOTATION_ROTATE_PASSWORD: token})
    held = kill_at_the_secret_write(c, name, delay, lambda: c.apply(rotate), SECRET_PATCHED)
    c.wait_for(lambda: confirmed(c, name, token), timeout=120, what=f"{name} rotated and confirmed after the kill")
    rotated = c.secret(f"{name}-connection") or {}
    ends_with_the_held_password(rotated.get("password"), held, created.get("password"), f"{name} (rotation, {delay} s)")
    kept = rotated.get("password") == created.get("password")  # compared here: pytest would print the values
    assert not kept, f"{name}: the rotation kept the old password"
    ok, why = c.connects(rotated.get("uri", ""))
    assert ok, f"{name} (killed {delay} s after its Secret write, rotation): {why}"
    ok, _ = c.connects(created.get("uri", ""))
    assert not ok, f"{name}: the password before the rotation still works"
