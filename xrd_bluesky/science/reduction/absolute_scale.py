"""Absolute intensity scale, 1/cm/sr (Sheyfer et al., Phys. Rev. Lett. 125, 125504 (2020), Eq. S1).

    I(q) = I_s(q) / (F_s T_s t f dOmega) - I_bg(q) / (F_bg T_bg t f dOmega)

``I_s``, ``I_bg``: dark-subtracted, gain-corrected counts of sample and background;
``F``: incident flux (photons/s) from the I0 ion chamber through its linear calibration;
``T``: transmission ``(It/I0) / air transmission``; ``t``: exposure (s) — the I0 gate
spans every frame of an exposure, so photons on the sample are ``F * t`` for the summed
frames; ``f``: the sample's thickness (cm), used for both terms; ``dOmega``: each pixel's
absolute solid angle (sr), already in the normalization of
:class:`~xrd_bluesky.science.reduction.corrected_integration.CorrectedIntegrator`, so dividing
a pattern in counts/sr by ``F T t f`` gives 1/cm/sr.

The secondary-standard route: a measured standard (water, glassy carbon) against its
known cross-section gives a factor that then multiplies other runs' patterns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...errors import GeometryError, MissingMetadataError, MonitorError
from .corrected_integration import BinSums
from .integration import IntegrationResult
from .monitors import AIR_TRANSMISSION, FluxCalibration, air_fraction, positive

#: Water at 20 C: the low-q limit of dSigma/dOmega (1/cm/sr).
WATER_LOW_Q_CM_SR = 0.0163

#: Known absolute curves of secondary standards: radial unit, range and intensity (1/cm/sr)
#: as a function of the radial coordinate. Water at 20 C is flat at 0.0163 1/cm/sr
#: below about 5 1/nm.
KNOWN_STANDARDS = {
    "water": {"unit": "q_nm^-1", "radial_range": (0.0, 5.0),
              "radial": np.array([0.0, 5.0]), "intensity": np.full(2, WATER_LOW_Q_CM_SR)},
}

#: Statistical margin (standard deviations of It/I0 counting noise) before a
#: transmission above 1 is called non-physical.
TRANSMISSION_SIGMAS = 5.0


@dataclass(frozen=True)
class Exposure:
    """The monitors and sample facts of one exposure that put it on the absolute scale.

    Parameters
    ----------
    i0_counts, it_counts : float
        Upstream and downstream ion-chamber counts during the exposure (counts).
    exposure_s : float
        Total exposure of the (summed) frames the counts belong to (s).
    thickness_mm : float
        Sample thickness (mm).
    calibration : FluxCalibration
        I0 rate to flux (ph/s).
    air_transmission : float
        Transmission of the air between the chambers (no sample).
    """

    i0_counts: float
    it_counts: float
    exposure_s: float
    thickness_mm: float | None
    calibration: FluxCalibration = FluxCalibration()
    air_transmission: float = AIR_TRANSMISSION

    def check(self) -> None:
        """Raise :class:`MonitorError` (or :class:`MissingMetadataError` for a missing
        or non-positive thickness) naming the value that makes the exposure unusable:
        monitors, exposure, thickness or air transmission that are not positive finite
        numbers, a transmission above 1 beyond counting noise, or a flux <= 0."""
        positive("monitor I0", self.i0_counts, "counts")
        positive("monitor It", self.it_counts, "counts")
        positive("exposure", self.exposure_s, "s")
        _thickness(self.thickness_mm)
        air_fraction(self.air_transmission)
        t = self.raw_transmission
        limit = 1.0 + TRANSMISSION_SIGMAS * math.sqrt(1.0 / self.i0_counts + 1.0 / self.it_counts)
        if t > limit:
            raise MonitorError(f"transmission (It/I0)/air = {t:.5g} > 1 (It={self.it_counts!r}, "
                               f"I0={self.i0_counts!r}, air {self.air_transmission})")
        self.calibration.flux(self.i0_counts, self.exposure_s)  # raises on flux <= 0

    @property
    def raw_transmission(self) -> float:
        """``(It / I0) / air transmission``, unclipped."""
        return self.it_counts / self.i0_counts / self.air_transmission

    @property
    def transmission(self) -> float:
        """Sample transmission, at most 1 (a value within counting noise above 1 is 1)."""
        return min(self.raw_transmission, 1.0)

    @property
    def flux_ph_s(self) -> float:
        """Incident flux (photons/s)."""
        return self.calibration.flux(self.i0_counts, self.exposure_s)

    def factor(self, thickness_mm: float | None = None) -> float:
        """``F T t f`` (photons cm): divide counts/sr by it for 1/cm/sr.

        ``thickness_mm`` (mm) overrides the exposure's own (Eq. S1 divides the
        background by the *sample's* thickness)."""
        self.check()
        f_cm = 0.1 * _thickness(self.thickness_mm if thickness_mm is None else thickness_mm)
        return self.flux_ph_s * self.transmission * self.exposure_s * f_cm


def _thickness(thickness_mm: float | None) -> float:
    """The sample thickness (mm) as a float, or :class:`MissingMetadataError` naming it
    when it is missing or not a positive finite number."""
    if thickness_mm is None:
        raise MissingMetadataError("sample thickness_mm is missing: no absolute scale without it")
    return positive("sample thickness_mm", thickness_mm, "mm", error=MissingMetadataError)


def absolute(sums: BinSums, exposure: Exposure, thickness_mm: float | None = None) -> BinSums:
    """Sums whose intensity is in 1/cm/sr (see :meth:`Exposure.factor`)."""
    return sums.normalized_by(exposure.factor(thickness_mm))


def subtract(sample: IntegrationResult, background: IntegrationResult) -> IntegrationResult:
    """``sample - background`` on the sample's bins, errors added in quadrature.

    The background is interpolated (linearly, with its sigma) when its bins differ;
    sample bins outside the background's range are NaN.
    """
    if sample.unit != background.unit:
        raise ValueError(f"cannot subtract a {background.unit} background from a {sample.unit} pattern")
    if np.array_equal(sample.radial, background.radial):
        bg, bg_sigma = background.intensity, background.sigma
    else:
        ok = np.isfinite(background.intensity)
        x = background.radial[ok]
        bg = np.interp(sample.radial, x, background.intensity[ok], left=np.nan, right=np.nan)
        bg_sigma = np.interp(sample.radial, x, background.sigma[ok], left=np.nan, right=np.nan)
    return IntegrationResult(sample.radial, sample.intensity - bg,
                             np.hypot(sample.sigma, bg_sigma), sample.unit, sample.count)


@dataclass(frozen=True)
class StandardFactor:
    """The factor that puts a measured standard on its known absolute curve.

    Attributes
    ----------
    factor : float
        Weighted mean of ``known / measured`` over the range (dimensionless).
    sigma : float
        Its 1-sigma statistical error.
    low, high : float
        Extreme relative deviations of the per-bin ratio from ``factor`` over the range
        (the flatness: -0.02 and 0.03 mean -2 % and +3 %).
    radial_range : (float, float)
        Range used, in the pattern's radial unit.
    """

    factor: float
    sigma: float
    low: float
    high: float
    radial_range: tuple[float, float]


def standard_factor(measured: IntegrationResult, known_radial: np.ndarray, known_intensity: np.ndarray,
                    radial_range: tuple[float, float]) -> StandardFactor:
    """Scale factor ``known / measured`` of a standard and its flatness.

    Parameters
    ----------
    measured : IntegrationResult
        The standard's pattern (any consistent intensity unit).
    known_radial, known_intensity : ndarray
        The standard's known curve, radial in the pattern's unit, intensity in the
        target unit (e.g. 1/cm/sr); interpolated linearly onto the pattern's bins.
    radial_range : (float, float)
        Where to compare, in the pattern's radial unit.

    Raises
    ------
    GeometryError
        Fewer than 3 bins in the range have a positive finite intensity and sigma
        (an empty range), naming the range.
    """
    lo, hi = radial_range
    sel = (measured.radial >= lo) & (measured.radial <= hi) & np.isfinite(measured.intensity) & (measured.intensity > 0)
    sel &= np.isfinite(measured.sigma) & (measured.sigma > 0)
    sel &= (measured.radial >= np.min(known_radial)) & (measured.radial <= np.max(known_radial))
    if sel.sum() < 3:
        raise GeometryError(f"fewer than 3 usable bins of the standard between {lo} and {hi} {measured.radial_units}")
    order = np.argsort(known_radial)
    known = np.interp(measured.radial[sel], np.asarray(known_radial)[order], np.asarray(known_intensity)[order])
    ratio = known / measured.intensity[sel]
    ratio_sigma = ratio * measured.sigma[sel] / measured.intensity[sel]
    weights = 1.0 / ratio_sigma**2
    factor = float(np.sum(weights * ratio) / np.sum(weights))
    deviation = ratio / factor - 1.0
    return StandardFactor(factor, float(1.0 / math.sqrt(np.sum(weights))), float(deviation.min()),
                          float(deviation.max()), (float(lo), float(hi)))


def scaled(pattern: IntegrationResult, factor: float) -> IntegrationResult:
    """``pattern`` with intensity and sigma multiplied by ``factor``."""
    return IntegrationResult(pattern.radial, pattern.intensity * factor, pattern.sigma * factor,
                             pattern.unit, pattern.count, pattern.azimuthal)


@dataclass(frozen=True)
class ReferencePattern:
    """A stored run's final stitched pattern on the absolute scale.

    Attributes
    ----------
    uid : str
        The raw run it came from.
    pattern : IntegrationResult
        q (1/nm), intensity and sigma (1/cm/sr).
    thickness_mm : float
        The thickness (mm) it was scaled with.
    standard_factor : float or None
        For a standard run: known / measured.
    """

    uid: str
    pattern: IntegrationResult
    thickness_mm: float
    standard_factor: float | None = None

    @classmethod
    def from_stitched(cls, uid: str, last: Mapping, standard_factor: float | None = None) -> ReferencePattern:
        """From the last ``stitched_absolute`` event's values of an integration of run
        ``uid`` (its q, intensity, sigma, thickness and the standard factor it was
        multiplied by, taken out: back to the monitors' scale)."""
        applied = float(np.asarray(last["standard_factor"]))
        pattern = IntegrationResult(np.asarray(last["q"]), np.asarray(last["intensity"]) / applied,
                                    np.asarray(last["sigma"]) / applied, "q_nm^-1")
        return cls(uid, pattern, float(np.asarray(last["thickness_mm"])), standard_factor)
