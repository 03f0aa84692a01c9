"""DF-XRM alignment: drive the goniometer to a reflection, then rock it through the Bragg
condition (axis convention and the choice of angles:
:mod:`xrd_bluesky.science.dfxrm.orientation`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp

from ..errors import PlausibilityWarning
from ..schema.start import DFXRM_ALIGNMENT, run_start
from ..science.dfxrm.cif_structure import CrystalStructure, read_cif
from ..science.dfxrm.orientation import Facet, Mounting, orient, rocking_sensitivity
from ..science.dfxrm.reflection_table import Instrument, reflection_table

_DEFAULT_MOUNTING = Mounting()


def dfxrm_align(goniometer, crystal: CrystalStructure | str | Path, hkl: Sequence[int], *, energy_keV: float,
                up: Facet = _DEFAULT_MOUNTING.up, exit: Facet = _DEFAULT_MOUNTING.exit,
                instrument: Instrument = Instrument(), detectors: Sequence[Any] = (), md: dict | None = None):
    """Put reflection ``hkl`` of ``crystal`` in the Bragg condition and read ``detectors`` there.

    The angles come from :func:`~xrd_bluesky.science.dfxrm.orientation.orient`; they are
    computed, and bad requests refused, before any motor moves. The run
    (``purpose: "dfxrm_alignment"``) records the crystal, hkl, energy (keV), mounting,
    scattering plane, the reflection's 2theta (deg) and d (A), the angles (deg), and the
    rocking sensitivity of each axis (deg of deviation per deg, see
    :func:`~xrd_bluesky.science.dfxrm.orientation.rocking_sensitivity`) with the name of
    the motor that rocks fastest (``rocking_motor``: omega in the horizontal scattering
    plane; in the vertical plane omega only moves the spot and chi usually rocks), for
    :func:`rocking_scan`. One event reads the detectors and the three motors.

    Parameters
    ----------
    goniometer : device
        With ``omega``, ``chi`` and ``phi`` motors (deg), e.g. the simulated ``Goniometer``.
    crystal : CrystalStructure, str or Path
        The crystal, a CIF file or the name of a bundled CIF (``"Si"``...).
    hkl : sequence of int
        The reflection.
    energy_keV : float
        Photon energy (keV).
    up, exit : Facet
        Facets along +z and +x (downstream) at zero angles.
    instrument : Instrument
        2theta range (deg) and scattering plane.
    detectors : list
        Readable devices read at the computed position (may be empty).
    md : dict, optional
        Extra metadata.

    Raises
    ------
    XRDBlueskyError
        ``GeometryError`` for a forbidden, absent or unreachable reflection, one outside
        the instrument's 2theta range, an energy outside 1-60 keV or facets that are not
        perpendicular; ``SampleError`` for an unknown CIF.
    """
    structure = crystal if isinstance(crystal, CrystalStructure) else read_cif(crystal)
    for notice in structure.notices:  # e.g. the origin choice a CIF left open: said, and kept with the run
        warnings.warn(notice, PlausibilityWarning, stacklevel=2)
    hkl = tuple(int(v) for v in hkl)
    table = reflection_table(structure, energy_keV, instrument)
    solution = orient(table, hkl, Mounting(up, exit))
    angles, reflection = solution.angles, solution.reflection
    sensitivity = rocking_sensitivity(solution.ub, hkl, angles)
    motors = [goniometer.omega, goniometer.chi, goniometer.phi]
    _md = {**run_start(
        DFXRM_ALIGNMENT,
        detectors=[d.name for d in detectors],
        motors=[m.name for m in motors],
        num_points=1,
        plan_name="dfxrm_align",
        plan_args={"goniometer": repr(goniometer), "crystal": structure.name, "hkl": list(hkl),
                   "energy_keV": table.energy_keV, "up": str(up), "exit": str(exit),
                   "instrument": asdict(instrument), "detectors": [repr(d) for d in detectors]},
        crystal={"name": structure.name, "formula": structure.formula, "space_group": structure.space_group.xhm(),
                 "cif": structure.source, "notices": list(structure.notices)},
        hkl=list(hkl),
        energy_keV=table.energy_keV,
        mounting={"up": str(up), "exit": str(exit)},
        scattering_plane=instrument.scattering_plane,
        two_theta_deg=reflection.two_theta_deg,
        d_A=reflection.d_A,
        angles_deg={"omega": angles.omega_deg, "chi": angles.chi_deg, "phi": angles.phi_deg},
        rocking_sensitivity=sensitivity,
        rocking_motor=getattr(goniometer, max(sensitivity, key=lambda axis: abs(sensitivity[axis]))).name,
    ), **(md or {})}

    @bpp.run_decorator(md=_md)
    def body():
        yield from bps.mv(goniometer.omega, angles.omega_deg, goniometer.chi, angles.chi_deg,
                          goniometer.phi, angles.phi_deg)
        yield from bps.trigger_and_read(list(detectors) + motors)

    return (yield from bpp.stage_wrapper(body(), list(detectors)))


def rocking_scan(detectors: Sequence[Any], motor, center_deg: float, width_deg: float, num: int, *,
                 md: dict | None = None):
    """Rock ``motor`` over ``center_deg`` +- ``width_deg``/2 in ``num`` steps, reading ``detectors``.

    A ``bluesky.plans.scan`` whose run (``purpose: "dfxrm_alignment"``) records the
    rocking motor, centre and width (deg). Rock about the axis perpendicular to the
    scattering plane (``rocking_motor`` of :func:`dfxrm_align`): the integrated intensity
    then traces the mosaic distribution, of FWHM the mosaic spread divided by the axis's
    rocking sensitivity.

    Parameters
    ----------
    detectors : list
        Readable devices, triggered at each step.
    motor : movable
        The rocking motor (deg), e.g. ``goniometer.chi``.
    center_deg, width_deg : float
        Centre and full width of the scan (deg).
    num : int
        Steps.
    md : dict, optional
        Extra metadata.
    """
    center, width = float(center_deg), float(width_deg)
    _md = {**run_start(DFXRM_ALIGNMENT, plan_name="rocking_scan",
                       plan_args={"detectors": [repr(d) for d in detectors], "motor": repr(motor),
                                  "center_deg": center, "width_deg": width, "num": num},
                       rocking_motor=motor.name, rocking_center_deg=center, rocking_width_deg=width),
           **(md or {})}
    return (yield from bp.scan(list(detectors), motor, center - width / 2, center + width / 2, num, md=_md))
