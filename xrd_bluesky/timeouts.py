"""Calls that may never return (a file reader looping on a damaged header, a name lookup
without a timeout), run on a daemon thread and abandoned after a time limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_with_timeout(call: Callable[[], T], timeout_s: float, name: str) -> T:
    """``call()``'s result, or its exception re-raised in the caller's thread.

    Raises
    ------
    TimeoutError
        ``call`` did not return within ``timeout_s`` (s); its daemon thread, named
        ``name``, is abandoned and does not keep the process alive.
    """
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed over to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{name} did not finish within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
