"""Live plot of a ``pdf`` derived run: F(Q) and G(r) of the newest pattern, the
stitched one drawn over the frames' as it arrives."""

from __future__ import annotations

from matplotlib.figure import Figure

from .live_plot import LivePlot

#: Plotted streams: (stream, x key, y key, axis row); stitched streams are drawn in black.
CURVES = (("fq", "q", "fq", 0), ("gr", "r", "gr", 1), ("stitched_fq", "q", "fq", 0), ("stitched_gr", "r", "gr", 1))


class LivePDFPlot(LivePlot):
    """Plot a ``pdf`` run's F(Q) and G(r) as they arrive: the latest frame's in colour,
    the latest stitched pattern's in black. Plotting errors are logged, never raised.

    Parameters
    ----------
    figure : matplotlib Figure, optional
        Where to draw; a new pyplot figure (shown by IPython) if None.
    """

    def __init__(self, figure: Figure | None = None):
        super().__init__(figure, size=(7.0, 7.0))
        self._axes = self.figure.subplots(2, 1)
        self._axes[0].set_xlabel("Q (1/A)")
        self._axes[0].set_ylabel("F(Q) (1/A)")
        self._axes[1].set_xlabel("r (A)")
        self._axes[1].set_ylabel("G(r) (1/A^2)")
        self._streams: dict[str, tuple[str, str, str, int]] = {}
        self._lines: dict[str, object] = {}

    def start(self, doc):
        self.figure.suptitle(f"PDF of scan {doc.get('parent_scan_id', '')} "
                             f"({(doc.get('sample') or {}).get('name', '')})")

    def descriptor(self, doc):
        for stream, x, y, row in CURVES:
            if doc["name"] == stream:
                self._streams[doc["uid"]] = stream, x, y, row

    def event(self, doc):
        if doc["descriptor"] not in self._streams:
            return
        stream, x, y, row = self._streams[doc["descriptor"]]
        if stream not in self._lines:
            style = {"color": "k", "lw": 1.0, "label": "stitched"} if stream.startswith("stitched") \
                else {"lw": 0.8, "label": "latest frame"}
            self._lines[stream], = self._axes[row].plot([], [], **style)
            self._axes[row].legend(fontsize="small")
        self._lines[stream].set_data(doc["data"][x], doc["data"][y])
        self._axes[row].relim()
        self._axes[row].autoscale_view()
        self.figure.canvas.draw_idle()
