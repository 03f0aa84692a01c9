"""The ``xrd-bluesky`` command line: :mod:`.main` and one module per subcommand, each with
``add_parser(subparsers)`` and ``run(args)``."""

from .main import main

__all__ = ["main"]
