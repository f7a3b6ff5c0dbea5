"""``mpg-operator`` with every logger at DEBUG (the campaigns' secret-leak scan reads all of it).

``mpg-operator run --verbose`` leaves ``httpx`` and ``aiohttp.access`` at WARNING; this launcher
runs the same command line and entry point, only with those two loggers at DEBUG as well. It is the
real operator in its own process: nothing else is changed.

    python tests/campaigns/operator_debug.py run --all-namespaces --verbose
"""

from __future__ import annotations

import logging
import sys

from mpg_operator import cli, operator_cli

_configure = operator_cli.configure_logging


def _configure_all_debug(fmt: str, verbose: bool) -> None:
    _configure(fmt, verbose)
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore", "aiohttp.access", "kopf", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)


operator_cli.configure_logging = _configure_all_debug

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
