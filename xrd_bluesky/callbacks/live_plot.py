"""Base of the live plots: a matplotlib figure fed by a derived run's documents, whose
errors are logged and never raised (a plot must not stop a scan; see
:func:`~xrd_bluesky.isolation.isolated`)."""

from __future__ import annotations

import logging

from event_model import DocumentRouter
from matplotlib.figure import Figure

from ..isolation import isolated

logger = logging.getLogger(__name__)


class LivePlot(DocumentRouter):
    """A :class:`DocumentRouter` drawing into ``figure``.

    Parameters
    ----------
    figure : matplotlib Figure, optional
        Where to draw; a new pyplot figure (shown by IPython) of ``size`` (inches) if None.
    size : (float, float)
        Size of the new figure.
    """

    def __init__(self, figure: Figure | None = None, size: tuple[float, float] = (6.0, 7.0)):
        super().__init__()
        if figure is None:
            import matplotlib.pyplot as plt
            figure = plt.figure(figsize=size)
        self.figure = figure

    def _skip(self, name: str, doc: dict, validate: bool = False, *, exc: Exception):
        """The reaction to a plotting failure (see :func:`~xrd_bluesky.isolation.isolated`):
        logged with its traceback, the document is not drawn."""
        logger.exception("%s failed on a %r document", type(self).__name__, name)
        return name, doc

    @isolated(_skip)
    def __call__(self, name, doc, validate=False):
        return super().__call__(name, doc, validate)
