"""Secret-leak scan over what the campaigns produced (runs last in this folder: ``zz``).

Scanned: every log record of the pytest process at DEBUG (simulator, emulator, clients; the
emulator's CEL evaluator is kept at INFO), every line the operator processes wrote (all their
loggers at DEBUG, through ``operator_debug.py``), and every Event and every ManagedPostgres status of
each campaign sandbox. Looked for: every API key secret the simulator issued, every service password
it holds, every password a connection Secret carried (raw and URL-encoded), and any connection
string with a password in it (``postgres://user:pass@``).

This is a final campaign module that scans what the campaigns produced, not a session-wide plugin:
the other test packages run their own in-process operators and have their own checks.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from campaign_harness import Campaign, Produced

pytestmark = [pytest.mark.campaign, pytest.mark.no_conformance]

URI_WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^\s:/@'\"]+:[^\s@/'\"]+@")


def test_no_secret_in_logs_events_or_status(campaign: Campaign, produced: Produced, live_campaigns: list[Campaign]):
    for c in list(live_campaigns):
        c.collect()
    secrets = {s for s in produced.secrets if s and len(s) >= 6}
    needles = secrets | {quote(s, safe="") for s in secrets}
    assert secrets, "no secret collected: the scan would be vacuous"
    assert produced.operator_lines, "no operator output collected"
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    sources = {
        "pytest log": produced.log_lines,
        "operator output": produced.operator_lines,
        "events and statuses": produced.documents,
    }
    leaks = []
    for source, lines in sources.items():
        for i, line in enumerate(lines):
            if pattern.search(line) or URI_WITH_PASSWORD.search(line):
                leaks.append(
                    f"{source} #{i}: {pattern.sub('***', URI_WITH_PASSWORD.sub('postgres://***@', line))[:300]}"
                )
    print(
        f"\n[leak scan] {len(secrets)} secrets over {len(produced.log_lines)} log lines, "
        f"{len(produced.operator_lines)} operator lines, {len(produced.documents)} events and statuses"
    )
    assert leaks == [], f"{len(leaks)} line(s) with a secret:\n" + "\n".join(leaks[:20])
