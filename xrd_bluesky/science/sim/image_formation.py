"""Image formation: what an area detector records for a sample, a geometry and a beam.

expected photons per pixel =
    flux (ph/s) x exposure (s) x transmission x thickness (cm)
    x dSigma/dOmega (1/cm/sr, averaged over the pixel) x pixel solid angle (sr)
    x polarization factor,
zero in the beamstop's shadow; then Poisson photons x gain map + dark current and
read noise, rounded and clipped at the counter's depth; module gaps read -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import ShapeMismatchError
from ..detector_pixels import Beamstop, module_slices, pixel_geometry
from ..geometry import Poni, detector_model
from ..units import energy_keV
from .samples import Sample

#: Value written in module gaps (as Pilatus detectors do).
GAP_VALUE = -1


@dataclass(frozen=True)
class DetectorResponse:
    """The detector's ground truth: gain map, defects, dark current, noise, depth."""

    detector: str
    gain: np.ndarray
    gaps: np.ndarray
    dead: np.ndarray
    damaged: np.ndarray
    hot: np.ndarray
    dark_rate_counts_s: float = 1.0
    hot_rate_counts_s: float = 2.0e4
    read_noise_counts: float = 1.0
    depth_bits: int = 20

    @property
    def shape(self) -> tuple[int, int]:
        return self.gain.shape

    @property
    def max_count(self) -> int:
        """Largest value the counter can hold."""
        return 2**self.depth_bits - 1

    @classmethod
    def simulate(cls, detector: str, seed: int = 0, *, pixel_rms: float = 0.03,
                 module_rms: float = 0.01, n_dead: int = 10, n_damaged: int = 20,
                 n_hot: int = 5, **kwargs) -> DetectorResponse:
        """A random but reproducible detector: lognormal pixel gain (``pixel_rms``),
        a gain step per module (``module_rms``), dead (gain 0), radiation-damaged
        (gain 1.5-2.5) and hot (high dark current) pixels away from the gaps."""
        det = detector_model(detector)
        rng = np.random.default_rng(seed)
        shape = det.shape
        gain = rng.lognormal(-0.5 * pixel_rms**2, pixel_rms, size=shape)
        gaps = det.mask.astype(bool) if det.mask is not None else np.zeros(shape, bool)
        for rows, cols in module_slices(det):
            gain[rows, cols] *= 1.0 + module_rms * rng.standard_normal()
        good = np.flatnonzero(~gaps.ravel())
        picks = rng.choice(good, size=n_dead + n_damaged + n_hot, replace=False)
        masks = []
        for start, count in ((0, n_dead), (n_dead, n_damaged), (n_dead + n_damaged, n_hot)):
            m = np.zeros(shape, bool)
            m.ravel()[picks[start:start + count]] = True
            masks.append(m)
        dead, damaged, hot = masks
        gain[dead] = 0.0
        gain[damaged] *= rng.uniform(1.5, 2.5, size=n_damaged)
        gain[gaps] = 0.0
        return cls(detector, gain.astype(np.float32), gaps, dead, damaged, hot, **kwargs)

    def dark_rate(self) -> np.ndarray:
        """Dark current per pixel (counts/s)."""
        rate = np.full(self.shape, self.dark_rate_counts_s, dtype=np.float32)
        rate[self.hot] = self.hot_rate_counts_s
        return rate


@lru_cache(maxsize=8)
def photons_per_incident_photon(sample: Sample, poni: Poni, beamstop: Beamstop | None,
                                polarization_factor: float = 0.99) -> np.ndarray:
    """Expected scattered photons per pixel per incident photon (float32 image, cached).

    Parameters
    ----------
    sample : Sample
        What is in the beam.
    poni : Poni
        Detector geometry (wavelength included).
    beamstop : Beamstop or None
        Beamstop whose shadow receives no photons.
    polarization_factor : float
        Beam polarization factor (pyFAI convention; 0.99 = horizontal synchrotron beam).
    """
    pixels = pixel_geometry(poni, polarization_factor)
    cross_section = sample.pixel_cross_section(pixels.two_theta, pixels.half_width, poni.wavelength, pixels.chi)
    per_photon = sample.transmission(energy_keV(poni.wavelength)) * sample.thickness_mm * 0.1
    image = (per_photon * cross_section * pixels.solid_angle_sr * pixels.polarization).astype(np.float32)
    if beamstop is not None:
        image[beamstop.shadow(pixels)] = 0.0
    image.setflags(write=False)
    return image


def expected_photons(sample: Sample, poni: Poni, *, flux_ph_s: float, exposure_s: float,
                     beamstop: Beamstop | None, polarization_factor: float = 0.99) -> np.ndarray:
    """Expected scattered photons per pixel (float32 image) for an incident flux
    ``flux_ph_s`` (photons/s) during ``exposure_s`` (s); see
    :func:`photons_per_incident_photon` for the other parameters."""
    per_photon = photons_per_incident_photon(sample, poni, beamstop, polarization_factor)
    return per_photon * np.float32(flux_ph_s * exposure_s)


def detect(photons_expected: np.ndarray, response: DetectorResponse, exposure_s: float,
           rng: np.random.Generator) -> np.ndarray:
    """Turn an expected-photon image into a recorded frame (int32 counts).

    Poisson photons x gain + dark current (its Poisson spread approximated as
    Gaussian together with the read noise), rounded, clipped to ``[0, max_count]``;
    module gaps are set to :data:`GAP_VALUE`.
    """
    if photons_expected.shape != response.shape:
        raise ShapeMismatchError(
            f"expected-photon image has shape {photons_expected.shape}, detector "
            f"{response.detector!r} has {response.shape}")
    counts = rng.poisson(photons_expected).astype(np.float32)
    counts *= response.gain
    dark = response.dark_rate() * np.float32(exposure_s)
    noise_sd = np.sqrt(dark + np.float32(response.read_noise_counts**2))
    counts += dark + noise_sd * rng.standard_normal(response.shape, dtype=np.float32)
    frame = np.clip(np.rint(counts), 0, response.max_count).astype(np.int32)
    frame[response.gaps] = GAP_VALUE
    return frame
