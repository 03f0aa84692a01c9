"""A mosaic single crystal on the goniometer: the sample of a simulated DF-XRM alignment.

The crystal scatters nothing between its Bragg spots (no diffuse or Compton scattering:
the frames show the detector's dark current and noise elsewhere). Its spots depend on the
goniometer angles, which a :class:`~xrd_bluesky.science.sim.samples.Sample` profile does not
see; the simulator adds :meth:`SingleCrystalSample.bragg_spots` to the frames for it.
Every reflection of the crystal (each member of each set of equivalents, down to the
d-spacing the sample was built with) whose deviation from the Bragg condition lies within
:data:`MOSAIC_CUTOFF_SIGMA` standard deviations of the mosaic spread puts a spot
(:func:`~xrd_bluesky.science.sim.bragg_spot.bragg_spot`) on the detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..crystal import Crystal
from ..detector_pixels import Beamstop, pixel_geometry
from ..dfxrm.attenuation import attenuation_length_um, material_of
from ..dfxrm.cif_structure import CrystalStructure, cell_volume_A3
from ..dfxrm.orientation import (
    GoniometerAngles,
    Mounting,
    b_matrix,
    bragg_deviations_deg,
)
from ..dfxrm.reflection_table import Instrument, laue_rotations, reflection_table
from ..geometry import Poni
from ..units import HC_KEV_ANGSTROM, energy_keV
from .bragg_spot import FWHM_PER_SIGMA, bragg_spot
from .samples import Sample

#: Reflections further than this many mosaic standard deviations from the Bragg condition
#: are not rendered (their weight is below exp(-32)).
MOSAIC_CUTOFF_SIGMA = 8.0

HKL = tuple[int, int, int]


@dataclass(frozen=True)
class SingleCrystalSample(Sample):
    """A mosaic single-crystal slab mounted on the goniometer.

    ``thickness_mm`` is the slab thickness along the exit-facet normal (mm) and
    ``material`` its composition and density, for the attenuation; the transmission the
    ion chambers see is that of ``thickness_mm`` along the beam, whatever the angles.

    Attributes
    ----------
    crystal : Crystal
        Lattice (A, deg) and atoms.
    mounting : Mounting
        Facets along +z ("up") and +x ("beam exit") at zero goniometer angles.
    reflections : tuple of ((h, k, l), float)
        Every reflection that may light up, with its |F|^2 (electrons^2).
    mosaic_fwhm_deg : float
        Mosaic spread, FWHM of a Gaussian (deg).
    spot_fwhm_deg : float
        Angular size of a spot seen from the sample, FWHM (deg).
    """

    crystal: Crystal = None  # type: ignore[assignment]
    mounting: Mounting = field(default_factory=Mounting)
    reflections: tuple[tuple[HKL, float], ...] = ()
    mosaic_fwhm_deg: float = 0.01
    spot_fwhm_deg: float = 0.1

    def profile(self, two_theta, wavelength_m):
        """No scattering between the Bragg spots (1/cm/sr)."""
        return np.zeros_like(np.asarray(two_theta, dtype=float))

    def ub(self) -> np.ndarray:
        """U . B (1/A) of the mounted crystal."""
        return self.mounting.u_matrix(self.crystal) @ b_matrix(self.crystal)

    def bragg_spots(self, angles: GoniometerAngles, poni: Poni, *, flux_ph_s: float, exposure_s: float,
                    beamstop: Beamstop | None, polarization_factor: float = 0.99) -> np.ndarray:
        """Expected photons per pixel (float32 image) of the spots at goniometer ``angles``.

        Parameters
        ----------
        angles : GoniometerAngles
            omega, chi, phi (deg).
        poni : Poni
            Detector geometry (wavelength included).
        flux_ph_s : float
            Incident flux (photons/s).
        exposure_s : float
            Exposure (s).
        beamstop : Beamstop or None
            Beamstop whose shadow receives no photons.
        polarization_factor : float
            Beam polarization factor (pyFAI convention).
        """
        pixels = pixel_geometry(poni, polarization_factor)
        image = np.zeros(pixels.two_theta.shape)
        wavelength_A = poni.wavelength * 1e10
        rotation = angles.rotation()
        hkl = np.array([h for h, _ in self.reflections], dtype=float).reshape(-1, 3)
        g_lab = hkl @ (rotation @ self.ub()).T
        deviations = bragg_deviations_deg(g_lab, wavelength_A)
        cutoff = MOSAIC_CUTOFF_SIGMA * self.mosaic_fwhm_deg / FWHM_PER_SIGMA
        near = np.flatnonzero(np.abs(deviations) < cutoff)  # NaN (unreachable) compares False
        if not near.size:
            return image.astype(np.float32)
        spot = dict(wavelength_A=wavelength_A, cell_volume_A3=cell_volume_A3(self.crystal),
                    mosaic_fwhm_deg=self.mosaic_fwhm_deg, spot_fwhm_deg=self.spot_fwhm_deg, rotation=rotation,
                    thickness_um=self.thickness_mm * 1e3,
                    attenuation_length_um=attenuation_length_um(self.material, energy_keV(poni.wavelength)),
                    pixels=pixels)
        for i in near:
            image += bragg_spot(g_lab[i], float(deviations[i]), self.reflections[i][1], **spot)
        if beamstop is not None:
            image[beamstop.shadow(pixels)] = 0.0
        return (image * (flux_ph_s * exposure_s)).astype(np.float32)


def single_crystal_sample(name: str, structure: CrystalStructure, *, mounting: Mounting = Mounting(),
                          thickness_mm: float = 0.1, mosaic_fwhm_deg: float = 0.01, spot_fwhm_deg: float = 0.1,
                          d_min_A: float = 0.6) -> SingleCrystalSample:
    """A :class:`SingleCrystalSample` of ``structure`` with all its reflections down to ``d_min_A``.

    Parameters
    ----------
    name : str
        Sample name (its slot in the sample changer).
    structure : CrystalStructure
        The crystal, e.g. from :func:`~xrd_bluesky.science.dfxrm.cif_structure.read_cif`.
    mounting : Mounting
        Facets along +z and +x at zero goniometer angles.
    thickness_mm : float
        Slab thickness along the exit-facet normal (mm).
    mosaic_fwhm_deg, spot_fwhm_deg : float
        Mosaic spread and spot size, FWHM (deg).
    d_min_A : float
        Smallest d-spacing listed (A); reflections beyond it never light up.

    Raises
    ------
    GeometryError
        If ``d_min_A`` corresponds to a limiting-sphere energy outside 1-60 keV
        (d_min 0.10-6.2 A).
    """
    # at this energy the limiting sphere (2theta = 180 deg) is exactly d = d_min
    table = reflection_table(structure, HC_KEV_ANGSTROM / (2.0 * d_min_A), Instrument(0.0, 180.0))
    rotations = laue_rotations(structure.space_group)
    reflections = tuple((tuple(int(v) for v in hkl), r.f_squared)
                        for r in table.reflections for hkl in np.unique(np.array(r.hkl) @ rotations, axis=0))
    return SingleCrystalSample(name, material_of(structure), thickness_mm, crystal=structure.crystal,
                               mounting=mounting, reflections=reflections, mosaic_fwhm_deg=mosaic_fwhm_deg,
                               spot_fwhm_deg=spot_fwhm_deg)
