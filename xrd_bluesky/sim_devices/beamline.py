"""Assemble the simulated beamline: source, ion chambers, detector stage (or 2theta
arm), area detector, sample changer and goniometer, seeded and configurable.

The simulator is built from the beamline description shipped beside this module
(``simulated_beamline.toml``; ``simulated_arm.toml`` for the detector on a 2theta arm,
:func:`arm_config`): its beamstop, flux calibration and polarization factor are the
devices' defaults, and :attr:`Beamline.description` is that description for the
configured detector (what analyses get; the true geometry stays here).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..beamline.description import BeamlineDescription, load_beamline
from ..science.calibration.position_models import ArmModel, ArmPosition
from ..science.detector_pixels import Beamstop
from ..science.geometry import (
    DetectorPositionModel,
    Poni,
    StagePosition,
    detector_model,
)
from ..science.reduction.monitors import FluxCalibration
from ..science.sim.image_formation import DetectorResponse, expected_photons
from ..science.sim.library import default_library
from ..science.sim.samples import Sample
from ..science.sim.single_crystal import SingleCrystalSample
from ..science.units import wavelength_m
from .area_detector import SimAreaDetector
from .ion_chamber import IonChamber, downstream_transmission, upstream_transmission
from .sample_changer import SampleChanger
from .source import Source
from .stage import DetectorArm, DetectorStage, Goniometer

#: The shipped description of the simulated beamline.
SIMULATED_DESCRIPTION = Path(__file__).with_name("simulated_beamline.toml")
#: The shipped description of the simulated beamline with its detector on a 2theta arm.
SIMULATED_ARM_DESCRIPTION = Path(__file__).with_name("simulated_arm.toml")


@lru_cache(maxsize=2)
def shipped_description(path: Path = SIMULATED_DESCRIPTION) -> BeamlineDescription:
    """The simulated beamline's description as shipped (default detector; ``path``:
    :data:`SIMULATED_ARM_DESCRIPTION` for the detector on the arm)."""
    return load_beamline(path)


def default_geometry(detector: str = "Pilatus2MCdTe") -> DetectorPositionModel:
    """The simulator's true geometry: beam near the detector centre, slightly off,
    detector tilted by 0.7 and -0.5 deg, 300 mm from the sample at stage (0, 0, 300)."""
    det = detector_model(detector)
    rows, cols = det.shape
    poni = Poni(dist=0.300, poni1=0.47 * rows * det.pixel1, poni2=0.53 * cols * det.pixel2,
                rot1=0.012, rot2=-0.008, rot3=0.0, wavelength=wavelength_m(17.0), detector=detector)
    return DetectorPositionModel(poni, StagePosition(0.0, 0.0, 300.0))


def arm_geometry(detector: str = "Pilatus300kw") -> ArmModel:
    """The simulator's true geometry of a detector on a vertical 2theta arm: 0.9 m from
    the sample, the beam 0.63 of the width across and 0.46 of the height up at zero
    rotation, tilted 0.3 deg sideways; the arm's zero at a reading of 0.25 deg and
    1.0008 deg turned per degree of reading."""
    det = detector_model(detector)
    rows, cols = det.shape
    poni = Poni(dist=0.900, poni1=0.46 * rows * det.pixel1, poni2=0.63 * cols * det.pixel2,
                rot1=0.0052, rot2=0.0, rot3=0.0, wavelength=wavelength_m(17.0), detector=detector)
    return ArmModel(poni, plane="vertical", offset_deg=0.25, scale=1.0008)


def arm_config(**changes) -> BeamlineConfig:
    """The simulated beamline with its detector (a Pilatus 300K-W) on a vertical 2theta
    arm and no beamstop in front of it (the arm leaves the direct beam), described by
    ``simulated_arm.toml``; ``changes`` override other settings."""
    description = shipped_description(SIMULATED_ARM_DESCRIPTION)
    return BeamlineConfig(**{"detector": "Pilatus300kw", "geometry": arm_geometry(), "beamstop": None,
                             "flux_calibration": description.monitors.flux_calibration,
                             "polarization_factor": description.polarization_factor, **changes})


def nominal_geometry(truth: DetectorPositionModel | ArmModel) -> DetectorPositionModel | ArmModel:
    """What the beamline staff believe before calibrating: the true direct-beam
    distance 1.5 % long, the beam centre 10 px right and 8 px up, no tilt; an arm's
    zero at reading 0 and 1 deg turned per degree."""
    f2 = truth.reference.fit2d()
    poni = Poni.from_fit2d(f2["directDist"] * 1.015, f2["centerX"] + 10, f2["centerY"] - 8,
                           wavelength=truth.reference.wavelength, detector=truth.reference.detector)
    if isinstance(truth, ArmModel):
        return replace(truth, reference=poni, offset_deg=0.0, scale=1.0, calibrated_range_deg=None)
    return DetectorPositionModel(poni, truth.reference_position)


@dataclass(frozen=True)
class BeamlineConfig:
    """Everything that defines a simulated beamline.

    Energies in keV, flux in ph/s, lengths as their names say.
    """

    detector: str = "Pilatus2MCdTe"
    energy_keV: float = 17.0
    flux_ph_s: float = 1.0e11
    geometry: DetectorPositionModel | ArmModel | None = None
    beamstop: Beamstop | None = field(default_factory=lambda: shipped_description().beamstop)
    polarization_factor: float = field(default_factory=lambda: shipped_description().polarization_factor)
    flux_calibration: FluxCalibration = field(
        default_factory=lambda: shipped_description().monitors.flux_calibration)
    seed: int = 0
    gain_pixel_rms: float = 0.03
    gain_module_rms: float = 0.01

    def true_geometry(self) -> DetectorPositionModel | ArmModel:
        """The true detector-position model at this configuration's energy."""
        model = self.geometry or default_geometry(self.detector)
        return model.with_wavelength(wavelength_m(self.energy_keV))

    def on_arm(self) -> bool:
        """Whether the detector is on a 2theta arm (else on the stage)."""
        return isinstance(self.geometry, ArmModel)

    def nominal_geometry(self) -> DetectorPositionModel | ArmModel:
        """The nominal geometry calibrations start from (see :func:`nominal_geometry`)."""
        return nominal_geometry(self.true_geometry())

    def description(self) -> BeamlineDescription:
        """The shipped description for this configuration: its detector, nominal
        geometry, beamstop, flux calibration and polarization factor (its frames, in
        the catalog's own frame directory, need no storage root)."""
        shipped = shipped_description(SIMULATED_ARM_DESCRIPTION if self.on_arm() else SIMULATED_DESCRIPTION)
        nominal = self.nominal_geometry()
        motion = shipped.detector().motion
        if isinstance(nominal, ArmModel):
            motion = replace(motion, plane=nominal.plane, offset_deg=nominal.offset_deg, scale=nominal.scale)
        else:
            motion = replace(motion, reference=nominal.reference_position)
        det = replace(shipped.detector(), pyfai=self.detector, models=(self.detector,), nominal=nominal.reference,
                      motion=motion)
        return replace(shipped, detectors={det.name: det}, beamstop=self.beamstop,
                       polarization_factor=self.polarization_factor,
                       monitors=replace(shipped.monitors, flux_calibration=self.flux_calibration))


@dataclass
class Beamline:
    """The devices of the simulated beamline, its description and the ground truth
    behind them."""

    config: BeamlineConfig
    description: BeamlineDescription
    source: Source
    i0: IonChamber
    it: IonChamber
    stage: DetectorStage
    detector: SimAreaDetector
    sample_changer: SampleChanger
    goniometer: Goniometer
    arm: DetectorArm | None = None

    def detector_position(self) -> StagePosition | ArmPosition:
        """Where the detector is now: the arm's angle when it is on the arm, else the
        stage's position."""
        return (self.arm or self.stage).position_now()

    def true_poni(self) -> Poni:
        """The true geometry at the current detector position and energy."""
        return replace(self.config.true_geometry().poni_at(self.detector_position()),
                       wavelength=wavelength_m(float(self.source.energy.get())))

    def true_geometry(self) -> DetectorPositionModel | ArmModel:
        """The true detector-position model at the current energy."""
        return self.config.true_geometry().with_wavelength(wavelength_m(float(self.source.energy.get())))

    @property
    def devices(self) -> dict:
        """Devices by the names a session exposes."""
        mount = {"det_arm": self.arm} if self.arm is not None else {"det_stage": self.stage}
        return {"source": self.source, "i0": self.i0, "it": self.it, **mount,
                "det": self.detector, "sample_changer": self.sample_changer, "gonio": self.goniometer}


def make_beamline(config: BeamlineConfig | None = None, *, data_dir: str | Path,
                  library: dict[str, Sample] | None = None) -> Beamline:
    """Build the simulated beamline.

    Parameters
    ----------
    config : BeamlineConfig, optional
        Detector model, energy, flux, true geometry, seed...
    data_dir : path
        Where the detector writes its HDF5 files.
    library : dict, optional
        Samples by name (default: :func:`~xrd_bluesky.science.sim.library.default_library`).
    """
    config = config or BeamlineConfig()
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    source = Source(name="source")
    source.energy.put(config.energy_keV)
    source.flux.put(config.flux_ph_s)
    stage = DetectorStage(name="det_stage")
    arm = DetectorArm(name="det_arm") if config.on_arm() else None
    if arm is None:
        ref = config.true_geometry().reference_position
        stage.x.move(ref.x)
        stage.y.move(ref.y)
        stage.distance.move(ref.distance)
    changer = SampleChanger(name="sample_changer", library=library or default_library())
    response = DetectorResponse.simulate(
        config.detector, int(seeds[0].generate_state(1)[0]),
        pixel_rms=config.gain_pixel_rms, module_rms=config.gain_module_rms)

    beamline: Beamline

    def render(exposure_s: float) -> np.ndarray:
        sample, poni = changer.sample(), beamline.true_poni()
        beam = dict(flux_ph_s=source.photons_per_second(), exposure_s=exposure_s, beamstop=config.beamstop,
                    polarization_factor=config.polarization_factor)
        image = expected_photons(sample, poni, **beam)
        if isinstance(sample, SingleCrystalSample):  # its spots follow the goniometer
            image = image + sample.bragg_spots(beamline.goniometer.angles(), poni, **beam)
        return image

    detector = SimAreaDetector(name="det", render=render, response=response,
                               data_dir=Path(data_dir), rng=np.random.default_rng(seeds[1]))

    def gate_time() -> float:
        return float(detector.acquire_time.get()) * int(detector.num_frames.get())

    def sample_transmission() -> float:
        return changer.sample().transmission(float(source.energy.get()))

    chamber = dict(flux=source.photons_per_second, gate_time=gate_time,
                   calibration=config.flux_calibration)
    i0 = IonChamber(name="I0", transmission=upstream_transmission,
                    rng=np.random.default_rng(seeds[2]), **chamber)
    it = IonChamber(name="It", transmission=downstream_transmission(sample_transmission),
                    rng=np.random.default_rng(seeds[3]), **chamber)
    beamline = Beamline(config, config.description(), source, i0, it, stage, detector, changer,
                        Goniometer(name="gonio"), arm)
    return beamline
