"""Decision log lines: JSON with the resource, service id and outcome; never a secret."""

from __future__ import annotations

import io
import json
import logging

from pythonjsonlogger.json import JsonFormatter

from mpg_operator.controller.logfields import decision_fields


def test_a_decision_logs_as_one_json_line_with_its_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("mpg_operator.test_decisions")
    logger.addHandler(handler)
    logger.propagate = False
    body = {
        "metadata": {"namespace": "shop", "name": "orders-db", "uid": "u1"},
        "status": {"serviceId": "svc-1", "hostname": "h"},
        "spec": {"credentialsRef": {"name": "clickhouse-cloud"}},
    }
    try:
        logger.warning("%s/%s: %s", "shop", "orders-db", "Paused", extra=decision_fields(body, "Paused", "Warning"))
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["name"] == "mpg_operator.test_decisions"
    assert (record["namespace"], record["managedpostgres"], record["service_id"]) == ("shop", "orders-db", "svc-1")
    assert (record["reason"], record["outcome"]) == ("Paused", "Warning")
    assert set(decision_fields(body, "Paused", "Warning")) == {
        "namespace",
        "managedpostgres",
        "service_id",
        "reason",
        "outcome",
    }
