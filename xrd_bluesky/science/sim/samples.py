"""The sample library: what each sample scatters, in absolute units (1/cm/sr).

Each sample knows its material (for transmission), its thickness and its
differential scattering cross-section per unit volume, dSigma/dOmega (1/cm/sr),
as a function of the scattering angle. Powders are rings of Gaussian profile in
2theta; amorphous samples and liquids are smooth functions of q.

Pixel-footprint averaging: a pixel spans a range of 2theta; the expected counts are
the profile averaged over that range. :meth:`Sample.pixel_cross_section` does that
exactly for a box footprint ``[tth - half_width, tth + half_width]`` through the
cumulative integral of the profile on a fine grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ...errors import SampleError
from ..crystal import Crystal, Reflection, ceo2
from ..materials import Material
from ..reduction.absolute_scale import WATER_LOW_Q_CM_SR
from ..units import q_nm, two_theta_rad

#: 2theta grid step (rad) used to tabulate profiles before pixel averaging.
PROFILE_STEP_RAD = math.radians(0.0005)
#: Largest 2theta (rad) the tabulated profiles cover.
PROFILE_MAX_RAD = math.radians(90.0)


@dataclass(frozen=True)
class Sample:
    """Base class: a named sample with a material and a thickness (mm)."""

    name: str
    material: Material | None
    thickness_mm: float

    def profile(self, two_theta: np.ndarray, wavelength_m: float) -> np.ndarray:
        """dSigma/dOmega (1/cm/sr) at scattering angles ``two_theta`` (rad)."""
        raise NotImplementedError

    def transmission(self, energy_keV: float) -> float:
        """X-ray transmission of the sample at ``energy_keV`` (keV)."""
        if self.material is None or self.thickness_mm == 0:
            return 1.0
        return self.material.transmission(self.thickness_mm, energy_keV)

    def pixel_cross_section(self, tth: np.ndarray, half_width: np.ndarray,
                            wavelength_m: float, chi: np.ndarray | None = None) -> np.ndarray:
        """Profile averaged over each pixel's 2theta footprint (1/cm/sr).

        Parameters
        ----------
        tth : ndarray
            2theta of the pixel centres (rad).
        half_width : ndarray
            Half the 2theta range each pixel spans (rad).
        wavelength_m : float
            X-ray wavelength (m).
        chi : ndarray, optional
            Azimuth of the pixel centres (rad), for samples that are not isotropic.
        """
        grid = np.arange(0.0, PROFILE_MAX_RAD, PROFILE_STEP_RAD)
        values = self.profile(grid, wavelength_m)
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (values[1:] + values[:-1]))]) * PROFILE_STEP_RAD
        lo = np.clip(tth - half_width, 0.0, grid[-1])
        hi = np.clip(tth + half_width, 0.0, grid[-1])
        width = hi - lo
        avg = np.empty_like(tth, dtype=np.float64)
        wide = width > 1e-3 * PROFILE_STEP_RAD
        avg[wide] = (np.interp(hi[wide], grid, cumulative) - np.interp(lo[wide], grid, cumulative)) / width[wide]
        avg[~wide] = np.interp(tth[~wide], grid, values)
        return avg

    def metadata(self) -> dict:
        """The start-document description of this sample."""
        md = {"name": self.name, "thickness_mm": self.thickness_mm}
        if self.material is not None:
            md["composition"] = self.material.formula
            md["density_g_cm3"] = self.material.density_g_cm3
        return md


@dataclass(frozen=True)
class EmptySample(Sample):
    """An empty position: no sample, no scattering."""

    def profile(self, two_theta, wavelength_m):
        return np.zeros_like(np.asarray(two_theta, dtype=float))


@dataclass(frozen=True)
class TensileResponse:
    """Elastic-plastic response of a tensile specimen to an applied (macroscopic) strain.

    Up to ``yield_strain`` the lattice strain along the load equals the applied strain;
    beyond it grows by ``hardening`` per unit of plastic strain. Transverse lattice
    strain is ``-poisson_ratio`` times the loading one. Peaks broaden by
    ``broadening_deg_per_plastic`` (deg FWHM, added in quadrature) per unit plastic strain.
    """

    yield_strain: float = 2.0e-3
    hardening: float = 0.1
    poisson_ratio: float = 0.29
    broadening_deg_per_plastic: float = 15.0
    loading_chi_deg: float = 0.0

    def plastic_strain(self, applied: float) -> float:
        """Plastic strain (dimensionless) at applied strain ``applied``."""
        return max(0.0, applied - self.yield_strain)

    def lattice_strain(self, applied: float) -> float:
        """Lattice strain along the load (dimensionless) at applied strain ``applied``."""
        return min(applied, self.yield_strain) + self.hardening * self.plastic_strain(applied)


@dataclass(frozen=True)
class PowderSample(Sample):
    """A polycrystalline powder: Debye-Scherrer rings.

    The 2theta-integrated cross-section of ring hkl per unit solid angle is
    proportional to ``m |F|^2 / (sin(theta) sin(2theta))`` (powder Lorentz factor with
    the ring circumference); ``strongest_ring_cm_sr`` scales the strongest ring's peak
    to that value (1/cm/sr). Profiles are Gaussians in 2theta of FWHM
    ``sqrt(fwhm_deg^2 + (broadening * tan(theta))^2)`` (deg), on a flat background.

    ``strain`` scales every d-spacing by (1 + strain) (isotropic lattice strain), unless
    ``strain_transverse`` is set: then ``strain`` is the lattice strain along the
    loading direction (azimuth ``loading_chi_deg``, pyFAI's chi) and
    ``strain_transverse`` perpendicular to it, ``cos^2``/``sin^2`` weighted in between.
    ``tensile`` (if any) says how an applied strain sets them (:meth:`under_load`).
    """

    crystal: Crystal = field(default_factory=ceo2)
    strongest_ring_cm_sr: float = 200.0
    fwhm_deg: float = 0.03
    broadening_deg: float = 0.0
    background_cm_sr: float = 0.05
    strain: float = 0.0
    strain_transverse: float | None = None
    loading_chi_deg: float = 0.0
    tensile: TensileResponse | None = None

    def under_load(self, applied: float) -> PowderSample:
        """The sample at applied strain ``applied``: with a :class:`TensileResponse`,
        directional lattice strains and plastic broadening; otherwise isotropic strain."""
        if self.tensile is None:
            return replace(self, strain=applied)
        t = self.tensile
        lattice = t.lattice_strain(applied)
        broadening = t.broadening_deg_per_plastic * t.plastic_strain(applied)
        return replace(self, strain=lattice, strain_transverse=-t.poisson_ratio * lattice,
                       loading_chi_deg=t.loading_chi_deg,
                       fwhm_deg=math.hypot(self.fwhm_deg, broadening))

    def pixel_cross_section(self, tth, half_width, wavelength_m, chi=None):
        if self.strain_transverse is None or chi is None:
            return super().pixel_cross_section(tth, half_width, wavelength_m)
        # a ring of d(1 + eps) at theta is the unstrained ring at sin(theta) (1 + eps)
        c2 = np.cos(chi - math.radians(self.loading_chi_deg)) ** 2
        eps = self.strain * c2 + self.strain_transverse * (1.0 - c2)
        tth_eff = 2.0 * np.arcsin(np.clip(np.sin(tth / 2.0) * (1.0 + eps), -1.0, 1.0))
        unstrained = replace(self, strain=0.0, strain_transverse=None)
        return unstrained.pixel_cross_section(tth_eff, half_width * (1.0 + eps), wavelength_m)

    def ring_table(self, wavelength_m: float) -> list[tuple[Reflection, float]]:
        """(reflection, 2theta in rad) of every ring reachable at ``wavelength_m`` (m)."""
        d_min = wavelength_m * 1e10 / (2.0 * math.sin(PROFILE_MAX_RAD / 2))
        crystal = self.crystal.strained(self.strain)
        return [(r, float(two_theta_rad(r.d_A, wavelength_m))) for r in crystal.reflections(d_min)]

    def profile(self, two_theta, wavelength_m):
        tth = np.asarray(two_theta, dtype=float)
        rows = self.ring_table(wavelength_m)
        weights = [r.multiplicity * r.f_squared / (math.sin(t / 2) * math.sin(t)) for r, t in rows]
        sigmas = [math.radians(self._fwhm_deg(t)) / 2.3548200450309493 for _, t in rows]
        peak_heights = [w / (s * math.sqrt(2 * math.pi)) for w, s in zip(weights, sigmas)]
        scale = self.strongest_ring_cm_sr / max(peak_heights)
        out = np.full_like(tth, self.background_cm_sr)
        for (_, t0), h, s in zip(rows, peak_heights, sigmas):
            near = np.abs(tth - t0) < 8 * s
            out[near] += scale * h * np.exp(-0.5 * ((tth[near] - t0) / s) ** 2)
        return out

    def _fwhm_deg(self, tth_rad: float) -> float:
        return math.hypot(self.fwhm_deg, self.broadening_deg * math.tan(tth_rad / 2))


@dataclass(frozen=True)
class AmorphousSample(Sample):
    """An amorphous solid or liquid whose cross-section is a function of q (1/nm).

    ``cross_section_q`` maps q (1/nm) to dSigma/dOmega (1/cm/sr).
    """

    cross_section_q: Callable[[np.ndarray], np.ndarray] = None  # type: ignore[assignment]

    def profile(self, two_theta, wavelength_m):
        return self.cross_section_q(q_nm(two_theta, wavelength_m))


def _gaussian(q, centre, sigma):
    return np.exp(-0.5 * ((q - centre) / sigma) ** 2)




def water_cross_section(q: np.ndarray) -> np.ndarray:
    """Water at 20 C (1/cm/sr) vs q (1/nm): 0.0163 at low q, main peak near 20 1/nm."""
    q = np.asarray(q, dtype=float)
    return WATER_LOW_Q_CM_SR + 0.085 * _gaussian(q, 20.0, 3.5) + 0.03 * _gaussian(q, 30.0, 5.0)


def buffer_cross_section(q: np.ndarray) -> np.ndarray:
    """A dilute aqueous buffer: water scattering plus 1 % from the solutes."""
    return 1.01 * water_cross_section(q)


#: Solute of the sample in buffer: spheres of radius (nm) and forward cross-section (1/cm/sr).
SOLUTE_RADIUS_NM = 1.5
SOLUTE_FORWARD_CM_SR = 0.05


def solute_cross_section(q: np.ndarray) -> np.ndarray:
    """Excess scattering of the solute (1/cm/sr) vs q (1/nm): homogeneous spheres."""
    qr = np.maximum(np.asarray(q, dtype=float) * SOLUTE_RADIUS_NM, 1e-6)
    amplitude = 3.0 * (np.sin(qr) - qr * np.cos(qr)) / qr**3
    return SOLUTE_FORWARD_CM_SR * amplitude**2


def sample_in_buffer_cross_section(q: np.ndarray) -> np.ndarray:
    """Solute in buffer (1/cm/sr): buffer plus the solute's excess scattering."""
    return buffer_cross_section(q) + solute_cross_section(q)


def glass_cross_section(q: np.ndarray) -> np.ndarray:
    """Soda-lime glass slides (1/cm/sr) vs q (1/nm): first sharp diffraction peak near
    15.5 1/nm, a second maximum near 30 1/nm and a smooth incoherent rise."""
    q = np.asarray(q, dtype=float)
    return 0.05 + 0.6 * _gaussian(q, 15.5, 3.0) + 0.35 * _gaussian(q, 30.0, 6.0) + 0.15 * (1 - np.exp(-(q / 40.0) ** 2))


def with_strain(sample: Sample, strain: float) -> Sample:
    """A copy of a powder sample with isotropic lattice strain ``strain`` (dimensionless)."""
    if not isinstance(sample, PowderSample):
        raise SampleError(f"sample {sample.name!r} is not crystalline; strain cannot be set")
    return replace(sample, strain=strain)
