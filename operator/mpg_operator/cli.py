"""The ``mpg-operator`` command line.

Each sub-command lives in a module with ``add_arguments(parser)`` and ``main(args) -> int``;
those modules import only ``argparse`` at the top, so ``--help`` and start-up stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mpg_operator import __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("mpg_operator.operator_cli", "run the operator (kopf) against the current cluster"),
    "demo": ("mpg_operator.demo", "simulator + Kubernetes emulator + operator, end to end"),
    "crd": ("mpg_operator.crd", "print the ManagedPostgres CustomResourceDefinition (YAML)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpg-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mpg-operator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a sub-command whose module is not there yet
            continue
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
