"""Live plot of fitted peaks: centre, FWHM and lattice strain of every peak against
the scan variable, updated with each event of a ``peak_fits`` derived run."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .live_plot import LivePlot

#: Rows of the plot: key suffix and axis label.
ROWS = (("centre_2theta", "centre 2theta (deg)"), ("fwhm_2theta", "FWHM (deg 2theta)"),
        ("strain", "lattice strain (1e-3)"))


class LivePeakPlot(LivePlot):
    """Plot a ``peak_fits`` run's ``primary`` stream as it arrives.

    The x axis is the raw run's first scanned variable (e.g. the applied strain; its
    units from the descriptor) or the event number when nothing was scanned. Failed
    fits are left out. Plotting errors are logged, never raised (a plot must not stop
    a scan).

    Parameters
    ----------
    figure : matplotlib Figure, optional
        Where to draw; a new pyplot figure (shown by IPython) if None.
    """

    def __init__(self, figure: Figure | None = None):
        super().__init__(figure, size=(6.0, 7.0))
        self._descriptor: str | None = None
        self._points: dict[str, list[tuple[float, float]]] = {}

    def start(self, doc):
        self._scan_keys = doc.get("scan_keys", [])
        self.figure.suptitle(f"peak fits of scan {doc.get('parent_scan_id', '')} "
                             f"({(doc.get('sample') or {}).get('name', '')})")

    def descriptor(self, doc):
        if doc["name"] != "primary":
            return
        self._descriptor = doc["uid"]
        keys = doc["data_keys"]
        self._x = next((k for k in self._scan_keys if k in keys), "parent_seq_num")
        x_units = keys[self._x].get("units", "") if self._x in keys else ""
        self._labels = [k[:-len("_centre_2theta")] for k in keys if k.endswith("_centre_2theta")
                        and not k.endswith("_sigma")]
        self.figure.clear()
        self._axes = self.figure.subplots(len(ROWS), 1, sharex=True)
        self._lines = {}
        for ax, (suffix, ylabel) in zip(self._axes, ROWS):
            ax.set_ylabel(ylabel)
            for label in self._labels:
                self._lines[label, suffix], = ax.plot([], [], "o-", ms=4, label=label)
        self._axes[0].legend(fontsize="small")
        self._axes[-1].set_xlabel(f"{self._x} ({x_units or 'dimensionless'})" if self._x != "parent_seq_num"
                                  else "event")

    def event(self, doc):
        if doc["descriptor"] != self._descriptor:
            return
        data = doc["data"]
        x = float(data[self._x])
        for label in self._labels:
            if not data[f"{label}_success"]:
                continue
            for suffix, _ in ROWS:
                y = float(data[f"{label}_{suffix}"]) * (1e3 if suffix == "strain" else 1.0)
                self._points.setdefault(f"{label}_{suffix}", []).append((x, y))
                xs, ys = np.transpose(self._points[f"{label}_{suffix}"])
                self._lines[label, suffix].set_data(xs, ys)
        for ax in self._axes:
            ax.relim()
            ax.autoscale_view()
        self.figure.canvas.draw_idle()
