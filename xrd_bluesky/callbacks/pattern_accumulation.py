"""Patterns accumulated over a measurement run's integrated frames.

Each frame's bin sums are added to running totals (constant memory however long the
run) in common q and 2theta bins (pyFAI MultiGeometry's definition of stitching), which
are emitted whenever the detector moves on to another position (a stage or a 2theta
arm) and at the stop. Derived-run streams (intensities with their 1-sigma errors):

``stitched``   all frames so far in common q and 2theta bins (counts/sr);
``stitched_absolute`` with it, over frames with usable monitors, in 1/cm/sr (times the
               named standard's factor, recorded as ``standard_factor``; 1 without);
``subtracted`` with ``stitched``, when the run names a background: sample minus
               background (scaled to the sample's thickness) in 1/cm/sr (times the
               standard's factor);
``standard``   at the stop of a run that measures a known standard: the factor known /
               measured and its flatness.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from ..errors import MissingMetadataError
from ..schema.integration import STANDARD_STREAM, STITCHED_ABSOLUTE_STREAM, STITCHED_STREAM, SUBTRACTED_STREAM
from ..science.reduction.absolute_scale import (
    KNOWN_STANDARDS,
    Exposure,
    ReferencePattern,
    absolute,
    scaled,
    standard_factor,
    subtract,
)
from ..science.reduction.corrected_integration import BinSums
from ..science.reduction.integration import IntegrationResult
from ..science.reduction.multi_geometry import stitch

#: Receives an event of the derived run as ``(stream, data)``.
StreamEmit = Callable[[str, dict], None]


class PatternAccumulator:
    """Stitched, absolute and background-subtracted patterns of one run's frames.

    Parameters
    ----------
    emit : callable
        Receives the accumulated patterns' events as ``(stream, data)``.
    thickness_mm : float or None
        The sample's thickness (mm), recorded with the absolute patterns; the
        background is scaled to it.
    background : ReferencePattern, optional
        A background run's pattern (1/cm/sr) subtracted from the sample's.
    standard : ReferencePattern, optional
        A standard run whose factor multiplies the absolute-scale patterns.
    measured_standard : str, optional
        The known standard (a key of ``KNOWN_STANDARDS``) this run measures: its
        factor is computed at the stop.

    Raises
    ------
    MissingMetadataError
        The standard run has no standard factor.
    """

    def __init__(self, emit: StreamEmit, *, thickness_mm: float | None, background: ReferencePattern | None = None,
                 standard: ReferencePattern | None = None, measured_standard: str | None = None):
        if standard is not None and standard.standard_factor is None:
            raise MissingMetadataError(f"standard run {standard.uid} has no standard factor")
        self._emit = emit
        self.thickness_mm = thickness_mm
        self.background = background
        self.standard = standard
        self.measured_standard = measured_standard
        # running totals and their frame counts
        self._stitched: BinSums | None = None
        self._stitched_2th: BinSums | None = None
        self._stitched_abs: BinSums | None = None
        self._frames = self._frames_abs = 0
        self._position: Hashable = None
        self._positions: set[Hashable] = set()

    @property
    def standard_factor(self) -> float:
        """The standard run's factor (known / measured), 1 without one."""
        return self.standard.standard_factor if self.standard else 1.0

    def at_position(self, position: Hashable) -> None:
        """The next frame is at detector ``position``: when the detector moved on, the
        patterns stitched so far are emitted (a completed position)."""
        self._positions.add(position)
        if self._stitched is not None and position != self._position:
            self._emit_patterns(final=False)
        self._position = position

    def add(self, q: BinSums, two_theta: BinSums) -> None:
        """Add a frame's sums in q and 2theta (counts/sr) to the stitched totals."""
        self._stitched = stitch([self._stitched, q])
        self._stitched_2th = stitch([self._stitched_2th, two_theta])
        self._frames += 1

    def add_absolute(self, q: BinSums, exposure: Exposure) -> IntegrationResult:
        """Add a frame's sums in q (counts/sr) on the absolute scale of its ``exposure``
        to the absolute total; return the frame's pattern in 1/cm/sr times the standard
        factor."""
        sums = absolute(q, exposure)
        self._stitched_abs = stitch([self._stitched_abs, sums])
        self._frames_abs += 1
        return scaled(sums.result(), self.standard_factor)

    def finish(self) -> None:
        """The run stopped: emit the final patterns (nothing if no frame was added)."""
        if self._stitched is not None:
            self._emit_patterns(final=True)

    def _emit_patterns(self, final: bool) -> None:
        counts, tth = self._stitched.result(), self._stitched_2th.result()
        self._emit(STITCHED_STREAM, {"q": counts.radial, "intensity": counts.intensity, "sigma": counts.sigma,
                                "two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                                "frames": self._frames, "positions": len(self._positions), "final": final})
        if self._stitched_abs is None:
            return
        pattern = self._stitched_abs.result()  # monitors' absolute scale
        factor = self.standard_factor
        calibrated = scaled(pattern, factor)
        self._emit(STITCHED_ABSOLUTE_STREAM, {"q": pattern.radial, "intensity": calibrated.intensity,
                                         "sigma": calibrated.sigma, "frames": self._frames_abs,
                                         "thickness_mm": self.thickness_mm, "standard_factor": factor,
                                         "final": final})
        if final and self.measured_standard:
            known = KNOWN_STANDARDS[self.measured_standard]
            result = standard_factor(pattern, known["radial"], known["intensity"], known["radial_range"])
            self._emit(STANDARD_STREAM, {"standard_factor": result.factor, "standard_factor_sigma": result.sigma,
                                    "deviation_low": result.low, "deviation_high": result.high,
                                    "radial_low": result.radial_range[0], "radial_high": result.radial_range[1]})
        if self.background is not None:
            bg = self.background
            background = scaled(bg.pattern, bg.thickness_mm / self.thickness_mm)
            result = scaled(subtract(pattern, background), factor)
            self._emit(SUBTRACTED_STREAM, {"q": result.radial, "intensity": result.intensity, "sigma": result.sigma,
                                      "standard_factor": factor, "final": final})
