"""``xrd-bluesky planner``: the DF-XRM planner as a web page (Streamlit).

Runs ``streamlit run`` on :mod:`xrd_bluesky.web.planner_app` in this process (through
``streamlit.web.cli``), headless, on the given address and port, with uploads capped at
the planner's CIF size, no usage statistics sent, no file watcher, no developer menu and
no traceback shown in the page (domain errors are shown by name; others go to the log).
Streamlit stops on Ctrl-C or SIGTERM. Needs the ``web`` extra: ``pip install
"xrd-bluesky[web]"``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..errors import UsageError
from .options import whole_number_in

#: Where the page's Streamlit script is.
APP_PATH = Path(__file__).parents[1] / "web" / "planner_app.py"
#: Largest upload Streamlit's server accepts (MB): that of a CIF on the page (2 MB).
MAX_UPLOAD_MB = 2


def add_parser(subparsers) -> None:
    """Add the ``planner`` subcommand."""
    p = subparsers.add_parser("planner", help='the DF-XRM planner as a web page (needs pip install "xrd-bluesky[web]")')
    p.add_argument("--port", type=whole_number_in(1, 65535, "port"), default=8501, help="port (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: loopback only; 0.0.0.0 to serve others)")
    p.set_defaults(func=run)


def streamlit_options(port: int, host: str) -> list[str]:
    """The options of ``streamlit run`` for the planner page."""
    return ["--server.port", str(port), "--server.address", host, "--server.headless", "true",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
            "--client.showErrorDetails", "false"]


def run(args: argparse.Namespace) -> int:
    """Serve the page until interrupted.

    Raises
    ------
    UsageError
        If Streamlit or plotly is not installed (the ``web`` extra).
    """
    missing = [name for name in ("streamlit", "plotly") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"the planner page needs {' and '.join(missing)}: pip install \"xrd-bluesky[web]\"")
    from streamlit.web import cli as streamlit_cli

    print(f"DF-XRM planner on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    streamlit_cli.main(["run", str(APP_PATH), *streamlit_options(args.port, args.host)], prog_name="streamlit",
                       standalone_mode=False)
    return 0
