#!/usr/bin/env python3
"""Run the reliability campaigns in full (docs/reliability.md).

    .venv/bin/python scripts/campaigns.py                 # every campaign, long form, a fresh seed
    .venv/bin/python scripts/campaigns.py --seed 4242     # replay a seed
    .venv/bin/python scripts/campaigns.py --rounds 4 -k crash_matrix
    make campaigns

The long forms (``MPG_CAMPAIGN=full``): the crash matrix kills the operator at every kill point of
every step ``--rounds`` times; the API-fault campaign runs 3 rounds with a 40-request 429 storm, a
60 s outage and 4 s answers; wide windows run ``--rounds`` rounds of 8 deletions right after
create; concurrent claims run ``--rounds`` x 3 rounds of 4 claimants (a kill after the claim every
third), 3 Secret races and 8 resources on one API-key Secret; identifiers try all 5 id forms; the
no-password walk makes 24 changes; the others as in CI; the bad-input corpus (another module) as it is. ``make test`` runs the
reduced forms (seed 7) as part of the suite. Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="seed of every random choice (default: a fresh one, printed)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the crash matrix and wide windows (default 2)")
    parser.add_argument("--reduced", action="store_true", help="the reduced form (as in CI) instead of the full one")
    parser.add_argument("--no-bad-input", action="store_true", help="leave out the bad-input corpus")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (e.g. crash_matrix)")
    args, rest = parser.parse_known_args()

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    env = dict(os.environ, MPG_CAMPAIGN_SEED=str(seed), MPG_CAMPAIGN_ROUNDS=str(args.rounds))
    if not args.reduced:
        env["MPG_CAMPAIGN"] = "full"
    keyword = args.keyword or ""
    if args.no_bad_input:
        keyword = f"({keyword}) and not bad_input" if keyword else "not bad_input"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-s",
        "-p",
        "no:logging",
        "--durations=0",
        "-o",
        "timeout=3600",
        "tests/campaigns",
    ]
    if keyword:
        command += ["-k", keyword]
    command += rest
    form = "reduced" if args.reduced else "full"
    print(f"campaigns ({form}), seed {seed}: MPG_CAMPAIGN_SEED={seed} {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command, cwd=ROOT, env=env)
    print(
        f"campaigns ({form}) finished with exit status {code}; replay with: "
        f".venv/bin/python scripts/campaigns.py --seed {seed} --rounds {args.rounds}"
        + (" --reduced" if args.reduced else ""),
        flush=True,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
