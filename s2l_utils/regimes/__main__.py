"""Publish finished shards to data/results/regimes/: ``python -m s2l_utils.regimes publish <sweep file>...``."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from .shards import publish


def main(argv: list[str] | None = None) -> int:
    """Publish each finished shard named; 2 (with the reason on stderr) when one is unfinished or uncommitted."""
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.regimes", description=__doc__.split(":")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    publishing = commands.add_parser("publish", help="copy finished shards' collected tables to data/results/regimes/")
    publishing.add_argument("sweeps", nargs="+", help="sweep files of finished shards")
    publishing.add_argument("--allow-dirty", action="store_true",
                            help="publish runs of uncommitted code (their commit is recorded with +dirty)")
    args = parser.parse_args(argv)
    try:
        for sweep_file in args.sweeps:
            publish(sweep_file, allow_dirty=args.allow_dirty)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
