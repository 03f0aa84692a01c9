"""What a test beamline's detector sees: frames of a powder sample rendered by the
simulator's image formation at the geometry its (anyone's) motors give.

The devices that record these frames are the ecosystem's (ophyd-async's simulated
detector, ophyd v1's area detector, ``ophyd.sim`` images); only the photons come from
this package's simulator, so that every number can be checked against the truth.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from xrd_bluesky.science.geometry import (
    DetectorPositionModel,
    Poni,
    StagePosition,
    detector_model,
)
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.science.units import wavelength_m

#: The test beamline: a Pilatus 1M on a stage, 200 mm from the sample at stage
#: (0, 0, 200) mm, tilted by 0.6 and -0.3 deg, at 17 keV.
DETECTOR = "Pilatus1M"
ENERGY_KEV = 17.0
REFERENCE_MM = StagePosition(0.0, 0.0, 200.0)


def true_geometry() -> DetectorPositionModel:
    """The test beamline's true detector-position model."""
    det = detector_model(DETECTOR)
    rows, cols = det.shape
    poni = Poni(dist=0.200, poni1=0.48 * rows * det.pixel1, poni2=0.52 * cols * det.pixel2, rot1=0.010, rot2=-0.005,
                wavelength=wavelength_m(ENERGY_KEV), detector=DETECTOR)
    return DetectorPositionModel(poni, REFERENCE_MM)


def nominal_geometry() -> Poni:
    """What the staff believe before calibrating: 1 % long, the beam centre 6 px off, no tilt."""
    f2 = true_geometry().reference.fit2d()
    return Poni.from_fit2d(f2["directDist"] * 1.01, f2["centerX"] + 6, f2["centerY"] - 4,
                           wavelength=wavelength_m(ENERGY_KEV), detector=DETECTOR)


@lru_cache(maxsize=8)
def _photons(sample: str, poni: Poni) -> np.ndarray:
    return expected_photons(default_library()[sample], poni, flux_ph_s=1e11, exposure_s=1.0, beamstop=None)


class Scene:
    """Renders the frame the detector records now.

    Parameters
    ----------
    position : callable
        Returns the detector stage's position (mm) from the test's motors.
    sample : str
        A sample of the simulator's library (``CeO2``, ``glass``, ...).
    seed : int
        Seeds the detector response and the photon noise.
    """

    def __init__(self, position: Callable[[], StagePosition], sample: str = "CeO2", seed: int = 0):
        self.position = position
        self.sample = sample
        self.truth = true_geometry()
        self.response = DetectorResponse.simulate(DETECTOR, seed)
        self.rng = np.random.default_rng(seed)

    def frame(self) -> np.ndarray:
        """One 1 s frame (counts, int32) at the stage's current position."""
        poni = self.truth.poni_at(self.position())
        return detect(_photons(self.sample, poni), self.response, 1.0, self.rng).astype(np.int32)


def description_toml(image_key: str, motors: dict[str, str], monitors: dict[str, str], storage_root: str,
                     models: tuple[str, ...] = ("Pilatus",), nominal: bool = True, name: str = "pilatus") -> str:
    """A beamline description of the test beamline (TOML) with the given data keys;
    its detector is called ``name``."""
    poni = nominal_geometry()
    lines = [
        'name = "test beamline"',
        f"[detectors.{name}]",
        f'pyfai = "{DETECTOR}"',
        f'image_key = "{image_key}"',
        f"models = {list(models)!r}".replace("'", '"'),
        "saturation_counts = 1048575",
        f"[detectors.{name}.motion]",
        'kind = "stage"',
        *(f'{axis} = "{key}"' for axis, key in motors.items()),
        f"reference_mm = [{REFERENCE_MM.x}, {REFERENCE_MM.y}, {REFERENCE_MM.distance}]",
    ]
    if nominal:
        lines += [f"[detectors.{name}.nominal]", f"distance_m = {poni.dist!r}", f"poni1_m = {poni.poni1!r}",
                  f"poni2_m = {poni.poni2!r}"]
    lines += ["[energy]", f"keV = {ENERGY_KEV}",
              "[monitors]", f'i0 = "{monitors["i0"]}"', f'it = "{monitors["it"]}"',
              "flux_slope = 62500.0", "flux_offset_ph_s = -12800000.0", "air_transmission = 0.868",
              "[corrections]", "polarization_factor = 0.99",
              "[frames]", f'storage_roots = ["{storage_root}"]']
    return "\n".join(lines) + "\n"
