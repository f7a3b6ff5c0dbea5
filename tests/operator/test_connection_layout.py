"""The connection Secret's layout: where the operator's keys are read from, what a layout change
removes (only what the operator wrote), and how a Secret written before layouts were recorded is read."""

import pytest

from mpg_operator.cloud.ids import canonical_id, canonical_id_or_none, same_id
from mpg_operator.reconcile.connection import (
    ANN_LAYOUT,
    ANN_PASSWORD_DIGEST,
    ANN_SERVICE_ID,
    REQUIRED_KEYS,
    Endpoint,
    ObservedSecret,
    SecretLayout,
    SecretShape,
    password_digest,
    secret_write,
)

SID = "67b4bc12-8582-45d0-8806-fe9b2e5a54e6"
PASSWORD = "Secr3tPassw0rdXYZ"
ENDPOINT = Endpoint(hostname="db.example", username="postgres", ca_pem="CA")


def written(shape: SecretShape, before: ObservedSecret | None = None, **extra_data: str) -> ObservedSecret:
    """The Secret after the operator wrote it in ``shape`` over ``before`` (and others added ``extra_data``)."""
    write = secret_write(shape, ENDPOINT, PASSWORD, service_id=SID, service_name="db", version="v1", before=before)
    data = {**(before.data if before else {}), **extra_data}
    labels = dict(before.labels) if before else {}
    annotations = dict(before.annotations) if before else {}
    for target, changes in ((data, write.data or {}), (labels, write.labels), (annotations, write.annotations)):
        for key, value in changes.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return ObservedSecret(data=data, annotations=annotations, controller_uid="uid", labels=labels)


@pytest.mark.parametrize(
    "value, canonical",
    [
        ("85E6C2A4-1F0E-4C7B-9D2A-3B5F6E7D8C9A", "85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a"),
        (" {85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a}\n", "85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a"),
        ("urn:uuid:85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a", "85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a"),
        ("85e6c2a41f0e4c7b9d2a3b5f6e7d8c9a", "85e6c2a4-1f0e-4c7b-9d2a-3b5f6e7d8c9a"),
        (" not-a-uuid ", "not-a-uuid"),  # anything else: only stripped, its case kept
        ("Org-Name", "Org-Name"),
    ],
)
def test_canonical_ids(value, canonical):
    assert canonical_id(value) == canonical
    assert same_id(value, canonical)


def test_absent_ids_are_never_the_same():
    assert canonical_id_or_none(None) is None and canonical_id_or_none("") == ""
    assert not same_id(None, None) and not same_id("", "") and not same_id(SID, None)


def test_a_prefix_change_moves_the_keys_and_keeps_what_others_added():
    first = written(SecretShape(), **{"app.note": "kept"})
    assert first.key_prefix == "" and first.password == PASSWORD
    shape = SecretShape(key_prefix="DB_")
    assert not first.layout_current(shape)
    second = written(shape, before=first)
    assert second.key_prefix == "DB_" and second.password == PASSWORD and second.layout_current(shape)
    assert sorted(k for k in second.data if not k.startswith("DB_")) == ["app.note"]
    assert {f"DB_{k}" for k in REQUIRED_KEYS} <= set(second.data)


def test_labels_and_annotations_the_spec_dropped_are_removed_others_stay():
    first = written(SecretShape(labels={"team": "orders"}, annotations={"note": "one"}))
    first = ObservedSecret(
        data=first.data,
        annotations={**first.annotations, "someone.else/annotation": "x"},
        controller_uid="uid",
        labels={**first.labels, "app.example/own": "yes"},
    )
    shape = SecretShape(labels={"tier": "db"})
    assert not first.layout_current(shape)
    second = written(shape, before=first)
    assert second.labels == {"app.example/own": "yes", "tier": "db"}
    assert "note" not in second.annotations and second.annotations["someone.else/annotation"] == "x"
    assert second.layout_current(shape)


def test_a_label_value_changed_by_hand_is_put_back():
    shape = SecretShape(labels={"team": "orders"})
    secret = written(shape)
    edited = ObservedSecret(
        data=secret.data, annotations=secret.annotations, controller_uid="uid", labels={"team": "x"}
    )
    assert not edited.layout_current(shape)


def test_a_secret_from_before_layouts_were_recorded_is_read_where_its_password_is():
    data = {f"OLD_{k}": "v" for k in REQUIRED_KEYS} | {"OLD_password": PASSWORD, "app.note": "kept"}
    annotations = {ANN_SERVICE_ID: SID, ANN_PASSWORD_DIGEST: password_digest(SID, PASSWORD)}
    legacy = ObservedSecret(data=data, annotations=annotations, controller_uid="uid", legacy_prefix="")
    assert legacy.written is None and legacy.key_prefix == "OLD_" and legacy.password == PASSWORD
    moved = written(SecretShape(), before=legacy)
    assert moved.password == PASSWORD and sorted(k for k in moved.data if k not in REQUIRED_KEYS) == ["app.note"]
    # Nothing confirmed to go by: the spec's prefix is assumed.
    unconfirmed = ObservedSecret(data={"DB_password": "x"}, annotations={}, legacy_prefix="DB_")
    assert unconfirmed.key_prefix == "DB_"


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"keyPrefix": "A_", "keys": ["B_host"], "labels": [], "annotations": []}']
)
def test_an_unreadable_layout_is_no_layout(text):
    assert SecretLayout.from_annotation(text) is None
    secret = ObservedSecret(data={"password": "x"}, annotations={ANN_LAYOUT: text})
    assert secret.written is None


def test_the_layout_annotation_round_trips():
    layout = SecretLayout("DB_", frozenset({"DB_host", "DB_password"}), frozenset({"team"}), frozenset({"note"}))
    assert SecretLayout.from_annotation(layout.to_annotation()) == layout
