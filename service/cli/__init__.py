"""The `agss-vos` command line: one module per group of commands, each with `register(subparsers)`.

Expected errors (bad input, unreachable service) print one line and exit with the code that
service/errors.py gives them; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, classify
from . import bench, export, keys, live, models, offline, servers, submit
from .common import CLIError

GROUPS = (offline, servers, submit, live, models, bench, export, keys)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agss-vos", description="AGSS-VOS video object segmentation.")
    p.add_argument("--version", action="version", version=f"agss-vos {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    if "AGSS_PARENT_PID" in os.environ:
        from ..runtime.supervisor import die_with_parent

        die_with_parent()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CLIError as e:
        print(f"agss-vos: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - expected errors become one line, bugs keep their traceback
        spec = classify(e)
        if spec is None:
            raise
        print(f"agss-vos: error: {e}", file=sys.stderr)
        return spec.exit
