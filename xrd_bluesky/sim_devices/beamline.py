"""Assemble the simulated beamline: source, ion chambers, detector stage, area
detector, sample changer and goniometer, seeded and configurable.

The simulator is built from the beamline description shipped beside this module
(``simulated_beamline.toml``): its beamstop, flux calibration and polarization factor
are the devices' defaults, and :attr:`Beamline.description` is that description for
the configured detector (what analyses get; the true geometry stays here).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..beamline.description import BeamlineDescription, load_beamline
from ..science.geometry import DetectorPositionModel, Poni, StagePosition, detector_model
from ..science.image_formation import Beamstop, DetectorResponse, expected_photons
from ..science.monitors import FluxCalibration
from ..science.samples import Sample, default_library
from ..science.single_crystal import SingleCrystalSample
from ..science.units import wavelength_m
from .area_detector import SimAreaDetector
from .ion_chamber import IonChamber, downstream_transmission, upstream_transmission
from .sample_changer import SampleChanger
from .source import Source
from .stage import DetectorStage, Goniometer


#: The shipped description of the simulated beamline.
SIMULATED_DESCRIPTION = Path(__file__).with_name("simulated_beamline.toml")


@lru_cache(maxsize=1)
def shipped_description() -> BeamlineDescription:
    """The simulated beamline's description as shipped (default detector)."""
    return load_beamline(SIMULATED_DESCRIPTION)


def default_geometry(detector: str = "Pilatus2MCdTe") -> DetectorPositionModel:
    """The simulator's true geometry: beam near the detector centre, slightly off,
    detector tilted by 0.7 and -0.5 deg, 300 mm from the sample at stage (0, 0, 300)."""
    det = detector_model(detector)
    rows, cols = det.shape
    poni = Poni(dist=0.300, poni1=0.47 * rows * det.pixel1, poni2=0.53 * cols * det.pixel2,
                rot1=0.012, rot2=-0.008, rot3=0.0, wavelength=wavelength_m(17.0), detector=detector)
    return DetectorPositionModel(poni, StagePosition(0.0, 0.0, 300.0))


def nominal_geometry(truth: DetectorPositionModel) -> DetectorPositionModel:
    """What the beamline staff believe before calibrating: the true direct-beam
    distance 1.5 % long, the beam centre 10 px right and 8 px up, no tilt."""
    f2 = truth.reference.fit2d()
    poni = Poni.from_fit2d(f2["directDist"] * 1.015, f2["centerX"] + 10, f2["centerY"] - 8,
                           wavelength=truth.reference.wavelength, detector=truth.reference.detector)
    return DetectorPositionModel(poni, truth.reference_position)


@dataclass(frozen=True)
class BeamlineConfig:
    """Everything that defines a simulated beamline.

    Energies in keV, flux in ph/s, lengths as their names say.
    """

    detector: str = "Pilatus2MCdTe"
    energy_keV: float = 17.0
    flux_ph_s: float = 1.0e11
    geometry: DetectorPositionModel | None = None
    beamstop: Beamstop = field(default_factory=lambda: shipped_description().beamstop)
    polarization_factor: float = field(default_factory=lambda: shipped_description().polarization_factor)
    flux_calibration: FluxCalibration = field(
        default_factory=lambda: shipped_description().monitors.flux_calibration)
    seed: int = 0
    gain_pixel_rms: float = 0.03
    gain_module_rms: float = 0.01

    def true_geometry(self) -> DetectorPositionModel:
        """The true detector-position model at this configuration's energy."""
        model = self.geometry or default_geometry(self.detector)
        return model.with_wavelength(wavelength_m(self.energy_keV))

    def nominal_geometry(self) -> DetectorPositionModel:
        """The nominal geometry calibrations start from (see :func:`nominal_geometry`)."""
        return nominal_geometry(self.true_geometry())

    def description(self) -> BeamlineDescription:
        """The shipped description for this configuration: its detector, nominal
        geometry, beamstop, flux calibration and polarization factor (its frames, in
        the catalog's own frame directory, need no storage root)."""
        shipped = shipped_description()
        nominal = self.nominal_geometry()
        det = replace(shipped.detector(), pyfai=self.detector, models=(self.detector,), nominal=nominal.reference,
                      motion=replace(shipped.detector().motion, reference=nominal.reference_position))
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

    def true_poni(self) -> Poni:
        """The true geometry at the current stage position and energy."""
        return replace(self.config.true_geometry().poni_at(self.stage.position_now()),
                       wavelength=wavelength_m(float(self.source.energy.get())))

    def true_geometry(self) -> DetectorPositionModel:
        """The true detector-position model at the current energy."""
        return self.config.true_geometry().with_wavelength(wavelength_m(float(self.source.energy.get())))

    @property
    def devices(self) -> dict:
        """Devices by the names a session exposes."""
        return {"source": self.source, "i0": self.i0, "it": self.it, "det_stage": self.stage,
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
        Samples by name (default: :func:`~xrd_bluesky.science.samples.default_library`).
    """
    config = config or BeamlineConfig()
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    source = Source(name="source")
    source.energy.put(config.energy_keV)
    source.flux.put(config.flux_ph_s)
    stage = DetectorStage(name="det_stage")
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
                        Goniometer(name="gonio"))
    return beamline
