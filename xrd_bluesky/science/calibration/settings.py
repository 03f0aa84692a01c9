"""The thresholds and effort of the automatic calibration, shared by the refinement
(:mod:`.refinement`, :mod:`.arm`) and the checks of a converged geometry
(:mod:`.calibrant_check`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CalibrationSettings:
    """Thresholds and effort of the automatic calibration.

    ``max_residual_deg``: largest accepted rms 2theta residual of the control points
    (deg). ``min_rings``/``min_points``: fewest rings and control points accepted.
    ``max_distance_change``: largest accepted relative change of the distance from the
    guess; ``max_centre_shift_mm``: largest accepted move of the beam centre (mm) —
    beyond these the guess was too far for automatic ring assignment.
    ``ring_schedule``: how many rings (innermost first; None = all) each round of
    extraction and refinement uses, so that the geometry converges on the well
    separated inner rings before outer, crowded rings are assigned.
    ``outlier_cut``: control points further than this many robust standard deviations
    from their ring are dropped before the final refinement of each round.

    Checks of a converged geometry (:mod:`~xrd_bluesky.science.calibration.calibrant_check`):
    ``check_bins``: bins of the 1D pattern in 2theta, ``check_stride``: of every how
    many rows and columns its pixels are taken; ``peak_min_sigma``: a peak is more
    prominent than this many robust standard deviations of the pattern;
    ``peak_min_fraction``: the significant peaks (compared with calibrants) are at
    least this fraction as prominent as the strongest, ``strong_peak_fraction`` the
    strong ones (the given calibrant must explain each); ``peak_tolerance_bins``: a ring
    within a peak's half width at half maximum, and at least within this many bins, is
    on it; another calibrant is preferred when it explains at least
    ``competitor_min_fraction`` of the peaks and ``competitor_margin`` more than the
    given one; ``min_found_fraction``: fewest of the expected rings (those whose bin
    holds ``min_ring_pixels`` valid pixels, up to the outermost found) found, and of the
    peaks beyond the first ring explained; ``energy_max_sigma``/``energy_min_change``:
    a wavelength fitted from the rings that differs from the given one by more than
    this many of its standard uncertainties and this relative change is reported.
    ``coarse_*``: the coarse alignment (see :func:`coarse_align`): ring-score widths
    (deg), number of bright pixels, PONI search range and step (px), relative distance
    search range.
    """

    max_residual_deg: float = 0.02
    min_rings: int = 3
    min_points: int = 50
    max_distance_change: float = 0.1
    max_centre_shift_mm: float = 10.0
    ring_schedule: tuple[int | None, ...] = (3, 6, 12, None)
    coarse_widths_deg: tuple[float, ...] = (0.3, 0.1, 0.03)
    coarse_points: int = 20000
    coarse_shift_px: float = 40.0
    coarse_step_px: float = 4.0
    coarse_distance_range: float = 0.08
    points_per_degree: float = 1.0
    outlier_cut: float = 4.0
    fix: tuple[str, ...] = ("wavelength", "rot3")
    check_bins: int = 1000
    check_stride: int = 2
    peak_min_sigma: float = 5.0
    peak_min_fraction: float = 0.02
    strong_peak_fraction: float = 0.1
    peak_tolerance_bins: float = 1.0
    competitor_min_fraction: float = 0.8
    competitor_margin: int = 2
    min_found_fraction: float = 0.6
    min_ring_pixels: int = 50
    energy_max_sigma: float = 3.0
    energy_min_change: float = 0.005

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
