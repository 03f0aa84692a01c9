"""The one safe-callback wrapper: an optional consumer's failure never reaches the RunEngine.

Analyses, live plots, file exporters and the 0MQ publisher are optional consumers of a
run's documents: whatever goes wrong in one of them is handled by its own reaction
(logged with its traceback, the derived run ended ``fail`` with the reason, the failure
recorded) and the scan goes on, as bluesky's ``make_callback_safe`` does for its
callbacks. Critical consumers (the raw-data writer) are never wrapped.

To debug such a failure, set ``XRD_BLUESKY_DEBUG_CALLBACKS`` (or bluesky's own
``BLUESKY_DEBUG_CALLBACKS``) to any non-empty value, as bluesky reads its switch: the
reaction still runs, then the exception propagates to the caller (the RunEngine stops).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Environment variables that let callback exceptions through (any non-empty value).
DEBUG_VARIABLES = ("XRD_BLUESKY_DEBUG_CALLBACKS", "BLUESKY_DEBUG_CALLBACKS")


def debug_callbacks() -> bool:
    """Whether a callback's exception propagates: one of :data:`DEBUG_VARIABLES` is set
    to a non-empty value (read at each failure, as bluesky does)."""
    return any(os.environ.get(name) for name in DEBUG_VARIABLES)


def isolated(on_failure: Callable[..., T]) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a callback so that an exception it raises goes to ``on_failure`` instead
    of its caller.

    Parameters
    ----------
    on_failure : callable
        The callback's reaction to a failure: called with the callback's own arguments
        and the exception as the keyword ``exc``, inside the ``except`` clause (so that
        ``logger.exception`` logs the traceback); what it returns is the callback's
        result. On a method, it is a method too (it receives ``self`` first).

    Returns
    -------
    callable
        A decorator. With :func:`debug_callbacks` on, the decorated callback re-raises
        the exception after ``on_failure`` has run.

    Examples
    --------
    >>> def skipped(name, doc, *, exc):
    ...     logger.exception("%s document not plotted", name)
    ...     return name, doc
    >>> @isolated(skipped)
    ... def plot(name, doc):
    ...     ...
    """

    def decorate(callback: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(callback)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:  # an optional consumer must not stop the scan
                outcome = on_failure(*args, **kwargs, exc=exc)
                if debug_callbacks():
                    raise
                return outcome

        return guarded

    return decorate
