"""``xrd-bluesky beamline``: write a commented example of a beamline description
(``--example``) or check one (``check FILE``) and print what was understood."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Add the ``beamline`` subcommand."""
    p = subparsers.add_parser("beamline", help="print an example beamline description (--example) or check one "
                                               "(check FILE)")
    p.add_argument("action", nargs="?", choices=["check"], help="check FILE: validate it, print what it says")
    p.add_argument("file", nargs="?", help="the beamline description (TOML)")
    p.add_argument("--example", action="store_true", help="print a commented example description")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the example, or check the file and print its summary."""
    from ..beamline import EXAMPLE, load_beamline

    if args.example:
        print(EXAMPLE, end="")
        return 0
    if args.action != "check" or not args.file:
        raise SystemExit("usage: xrd-bluesky beamline --example | xrd-bluesky beamline check FILE")
    description = load_beamline(args.file)
    print("\n".join(description.summary()))
    print(f"{args.file}: OK")
    return 0
