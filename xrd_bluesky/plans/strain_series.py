"""A tensile (or any load) series: step an applied strain, count at each step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps

from ..schema.start import MEASUREMENT, POSITIONS_MM, PRIMARY_STREAM, SAMPLE, STAGE_MOTORS, run_start
from .counting import counting_run, stage_motors

#: Integration defaults of a strain series: fine radial bins for the fits, a cake of 36
#: sectors (10 deg) for strain against azimuth, and no pixel splitting, so that bins
#: are independent and the fits' uncertainties honest (bounding-box splitting shares a
#: pixel between neighbouring bins and makes them 1.6-2.2x too small).
STRAIN_INTEGRATION = {"npt": 6000, "cake": [3000, 36], "split": "no"}


def strain_series(detectors: Sequence[Any], strain, strains: Sequence[float], *, peaks: dict,
                  stage=None, num: int = 1, shutter=None, num_darks: int = 1, energy=None,
                  sample: dict | None = None, integration: dict | None = None, md: dict | None = None):
    """Step the applied strain through ``strains`` and count ``num`` times at each.

    The run's live analysis integrates every frame (1D and cake) and fits ``peaks``
    (:mod:`xrd_bluesky.science.reduction.peak_specs`): centre, FWHM, d-spacing and lattice
    strain per event and per azimuthal sector.

    Parameters
    ----------
    detectors : list
        Readable devices (area detector, ion chambers), triggered together.
    strain : settable, readable
        The applied (macroscopic) strain, dimensionless: a load frame's strain
        set point or extensometer; read at every step.
    strains : sequence of float
        Applied strains (dimensionless), in order.
    peaks : dict
        What to fit (recorded as ``peaks`` in the start document), e.g.
        ``{"phase": "Mg", "hkl": [[1, 0, 1]], "model": "pseudo-voigt", "d0_uid": ref}``.
    stage : device, optional
        Detector stage (``x``, ``y``, ``distance`` in mm); read at every step so the
        geometry of its position is used.
    num : int
        Exposures per step.
    shutter : settable, optional
        Fast shutter; ``num_darks`` dark frames are taken first (shutter closed).
    num_darks : int
        Dark exposures.
    energy : readable, optional
        Photon-energy signal (keV), recorded in the start document.
    sample : dict, optional
        Sample description (name, composition, thickness_mm).
    integration : dict, optional
        Integration options of the run (``npt``, ``cake``); default
        :data:`STRAIN_INTEGRATION`.
    md : dict, optional
        Extra metadata.
    """
    strains = [float(s) for s in strains]
    readback = [strain] + ([stage.x, stage.y, stage.distance] if stage is not None else [])
    mount = {} if stage is None else {STAGE_MOTORS: stage_motors(stage),
                                      POSITIONS_MM: [[float(m.position) for m in readback[1:]]]}
    _md = run_start(MEASUREMENT, detectors=[d.name for d in detectors], motors=[strain.name],
                    num_points=num * len(strains), num_intervals=num * len(strains) - 1, plan_name="strain_series",
                    plan_args={"detectors": [repr(d) for d in detectors], "strain": repr(strain), "strains": strains,
                               "num": num},
                    peaks=peaks, integration=integration or STRAIN_INTEGRATION, dark_frames=shutter is not None,
                    hints={"dimensions": [([strain.name], PRIMARY_STREAM)]}, **mount,
                    **({SAMPLE: sample} if sample is not None else {}))

    def steps():
        for value in strains:
            yield from bps.mv(strain, value)
            for _ in range(num):
                yield from bps.trigger_and_read(list(detectors) + readback)

    return (yield from counting_run(detectors, steps(), _md, shutter=shutter, num_darks=num_darks, energy=energy,
                                    md=md))
