"""Credentials never reach repr, str, exception messages or logs."""

from __future__ import annotations

import logging

import pytest
from cloud_fakeapi import KEY_SECRET, ORG, SID, FakeApi, Reply, err, ok

from mpg_operator.cloud import (
    AmbiguousCreateError,
    CloudError,
    InvalidRequestError,
    PostgresServiceCreateRequest,
)

BASE = f"/organizations/{ORG}/postgres"
PASSWORD = "vV6cfEr2p_-TzkCDrZOx"
CONN = f"postgres://postgres:{PASSWORD}@h.example:5432/postgres?channel_binding=require"
SUPPLIED = "MySupplied-Passw0rd-123"
CREATE = PostgresServiceCreateRequest(name="oltp", provider="aws", region="us-east-1", size="r8gd.large")


def assert_clean(text: str) -> None:
    for secret in (PASSWORD, CONN, SUPPLIED, KEY_SECRET, "hunter2-extra-secret"):
        assert secret not in text


async def test_no_secret_in_repr_str_logs_or_errors(
    fake: FakeApi, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logging included
    created = {
        "id": SID,
        "state": "creating",
        "password": PASSWORD,
        "connectionString": CONN,
        "superuserPassword": "hunter2-extra-secret",
    }
    fake.on("POST", BASE, ok(created))
    fake.on(
        "PATCH",
        f"{BASE}/{SID}/password",
        err(400, f"BAD_REQUEST: password {SUPPLIED} is too weak"),
        Reply(status=500, text=f"crash while handling {SUPPLIED}"),
        ok({"password": PASSWORD}),
    )
    client = make_client(max_retries=0)
    texts = [repr(client), str(client)]

    svc = await client.create_service(CREATE)
    texts += [repr(svc), str(svc)]
    # Dumps mask the declared secrets; unknown credential-like fields are masked in repr only.
    dumped = svc.model_dump(exclude={"superuserPassword"})
    assert dumped["password"] == dumped["connection_string"] == "**********"
    texts += [str(dumped), svc.model_dump_json(exclude={"superuserPassword"})]
    assert svc.password is not None and svc.password.get_secret_value() == PASSWORD

    errors: list[CloudError] = []
    with pytest.raises(InvalidRequestError) as info:
        await client.set_password(SID, SUPPLIED)
    errors.append(info.value)
    with pytest.raises(CloudError) as info2:
        await client.set_password(SID, SUPPLIED)
    errors.append(info2.value)
    generated = await client.set_password(SID)
    texts += [repr(generated), str(generated)]
    for e in errors:
        texts += [str(e), repr(e), e.detail]
    assert "too weak" in errors[0].detail  # the message survives, the secret does not

    texts.append(caplog.text)
    texts += [repr(r.args) for r in caplog.records]
    assert caplog.records, "expected debug logs from the client and httpx"
    for text in texts:
        assert_clean(text)


async def test_ambiguous_error_message_is_clean(fake: FakeApi, make_client) -> None:
    fake.on("PATCH", f"{BASE}/{SID}/password", Reply(status=503, json={"status": 503, "error": "x"}))
    client = make_client()
    with pytest.raises(AmbiguousCreateError) as info:
        await client.set_password(SID)
    assert_clean(str(info.value))
