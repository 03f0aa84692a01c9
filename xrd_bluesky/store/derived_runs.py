"""Look up derived runs in the ``processed`` container."""

from __future__ import annotations

from tiled.queries import Key


def latest_successful(processed, analysis: str, **keys):
    """The newest derived run of ``analysis`` (whose start document holds ``keys``, if
    given) that ended with ``exit_status="success"``, or None."""
    runs = processed.search(Key("analysis") == analysis)
    for key, value in keys.items():
        runs = runs.search(Key(key) == value)
    for uid in reversed(list(runs)):
        run = runs[uid]
        if (run.stop or {}).get("exit_status") == "success":
            return run
    return None
