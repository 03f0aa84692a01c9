"""The contracts of xrd_bluesky.schema: each analysis's parameters survive their record
(as_dict -> JSON -> from_dict); a stored calibration of a custom detector comes back
with its detector; a replay runs with every parameter the live analysis recorded; the
start-document validators name the run, key and value at fault."""

import json
import re

import numpy as np
import pytest
from pyFAI.detectors import Detector
from pyFAI.geometry import Geometry
from tiled.queries import Contains

from xrd_bluesky.callbacks import AnalysisRouter
from xrd_bluesky.errors import MissingMetadataError
from xrd_bluesky.plans import multi_position_count
from xrd_bluesky.schema import InstrumentSettings, RunSetup
from xrd_bluesky.schema.calibration import MODEL_KEYS, CalibrationParameters, model_data
from xrd_bluesky.schema.gain_map import GainMapParameters
from xrd_bluesky.schema.integration import IntegrationParameters
from xrd_bluesky.schema.pdf import PDFParameters
from xrd_bluesky.schema.peak_fits import PeakFitParameters
from xrd_bluesky.schema.start import MeasurementStart, check_start, run_start
from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.science.calibration.position_models import ArmModel
from xrd_bluesky.science.calibration.settings import CalibrationSettings
from xrd_bluesky.science.detector_pixels import Beamstop
from xrd_bluesky.science.gain_map.method import GainMapSettings
from xrd_bluesky.science.geometry import DetectorPositionModel, Poni, StagePosition
from xrd_bluesky.science.pdf.pair_distribution import PDFConfig
from xrd_bluesky.science.reduction.monitors import FluxCalibration
from xrd_bluesky.store.calibrations import geometry_from_calibration
from xrd_bluesky.store.replay import replay
from xrd_bluesky.store.writer import catalog_writers, processed_writer

#: Settings no default has: a record that dropped one would not compare equal.
INSTRUMENT = InstrumentSettings(detector="pilatus", models=("PILATUS3 1M",), saturation_counts=1e6,
                                beamstop=Beamstop(radius_mm=1.5, arm_width_mm=0.8, arm_azimuth_deg=80.0,
                                                  distance_mm=20.0),
                                polarization_factor=0.5, flux_calibration=FluxCalibration(2.0, 3.0),
                                air_transmission=0.9, dark="required")


def custom_poni() -> Poni:
    """A geometry of a detector pyFAI knows only by its configuration (no model name)."""
    detector = Detector(pixel1=1e-4, pixel2=1.5e-4, max_shape=(300, 200))
    return Poni.from_integrator(Geometry(dist=0.2, poni1=0.015, poni2=0.015, detector=detector, wavelength=1e-10))


def recorded(parameters):
    """``parameters`` as a derived run's start document holds them (JSON) and reads them back."""
    return type(parameters).from_dict(json.loads(json.dumps(parameters.as_dict())))


@pytest.mark.parametrize("parameters", [
    CalibrationParameters(DetectorPositionModel(custom_poni(), StagePosition(1.0, -2.0, 250.0)),
                          CalibrationSettings(min_rings=4, ring_schedule=(2, None)), "CeO2", INSTRUMENT, "pil_image",
                          beamstop_margin_mm=3.0),
    CalibrationParameters(ArmModel(custom_poni(), plane="horizontal", offset_deg=0.4, calibrated_range_deg=(0, 30)),
                          calibrant="LaB6"),
    GainMapParameters(GainMapSettings(iterations=7, polarization_factor=0.9), INSTRUMENT, "pil_image", 1.25),
    IntegrationParameters(npt=1234, cake=(300, 18), split="no", beamstop_margin_mm=2.5, instrument=INSTRUMENT,
                          radial_ranges={"q_nm^-1": (1.0, 40.0), "2th_deg": (0.5, 30.0)},
                          monitors={"i0": "ic0", "it": "ic1"}, image_key="pil_image"),
    PeakFitParameters.configured({"phase": "Mg", "hkl": [[1, 0, 1]], "model": "pseudo-voigt", "d0_uid": "ref-1",
                                  "loading_azimuth_deg": 90.0}),
    PDFParameters(PDFConfig("Ni", rpoly=0.8, qmax=22.0, rmax=25.0, lorch=True), background_uid="capillary-1"),
], ids=["calibration", "arm calibration", "gain_map", "integration", "peak_fits", "pdf"])
def test_parameters_survive_their_record(parameters):
    assert recorded(parameters) == parameters


def test_integration_parameters_record_what_replays_restore():
    parameters = IntegrationParameters(npt=1234, split="no", beamstop_margin_mm=2.5, instrument=INSTRUMENT)
    record = json.loads(json.dumps(parameters.as_dict()))
    assert record["polarization_factor"] == 0.5 and record["beamstop_margin_mm"] == 2.5
    assert record["method"] == "no split, CSR (pyFAI), fused kernel"
    again = IntegrationParameters.from_dict(record)
    assert (again.polarization_factor, again.beamstop_margin_mm, again.split) == (0.5, 2.5, "no")


def test_a_run_s_integration_options_are_checked_with_the_key_named():
    defaults = IntegrationParameters()
    assert defaults.with_options({"npt": "3000", "cake": [100, 12]}) == IntegrationParameters(npt=3000, cake=(100, 12))
    for options, culprit in (([2000], "'integration' is [2000]; expected a mapping"),
                             ({"bins": 3}, "unknown integration options ['bins']"),
                             ({"split": "full"}, "integration option split='full'"),
                             ({"npt": "many"}, "integration options npt='many'"),
                             ({"npt": 2}, "too few bins")):
        with pytest.raises(MissingMetadataError, match=re.escape(culprit)):
            defaults.with_options(options)


def test_start_documents_are_built_and_checked_per_purpose():
    md = run_start("calibration", calibrant="CeO2", energy_keV=17.0, stage_motors={"x": "x", "y": "y",
                                                                                   "distance": "d"})
    assert check_start({**md, "uid": "c1"}) is not None and md["purpose"] == "calibration"
    with pytest.raises(MissingMetadataError, match="calibration run c2 has no 'calibrant' in its start document"):
        check_start({"purpose": "calibration", "uid": "c2", "energy_keV": 17.0})
    with pytest.raises(MissingMetadataError, match="gain-map run g1 has no 'stage_motors'"):
        check_start({"purpose": "gain_map", "uid": "g1", "energy_keV": 17.0})
    with pytest.raises(MissingMetadataError, match="'sample' is 'glass'; expected a mapping"):
        run_start("measurement", sample="glass")
    with pytest.raises(MissingMetadataError, match="unknown run purpose 'tea'"):
        run_start("tea")
    run = MeasurementStart.read({"purpose": "measurement", "motors": ["strain", "x"], "stage_motors": {"x": "x"},
                                 "sample": {"thickness_mm": 1.5}, "peaks": {"auto": 2}, "monitors": None})
    assert (run.scan_keys, run.thickness_mm, run.monitors, run.chained) == (["strain"], 1.5, {}, {"peaks": {"auto": 2}})
    with pytest.raises(MissingMetadataError, match="'monitors' is \\['ic0'\\]; expected a mapping"):
        MeasurementStart.read({"monitors": ["ic0"]})
    with pytest.raises(MissingMetadataError, match="unknown standard 'milk'"):
        MeasurementStart.read({"standard": "milk"})


@pytest.mark.parametrize("with_json", [True, False], ids=["model_json", "parameters only"])
def test_a_stored_calibration_of_a_custom_detector_comes_back_with_its_detector(catalog, with_json):
    """A calibration's ``model`` stream, as the analysis writes it, read back through
    the catalog: the model and its detector's configuration are the ones written."""
    from event_model import compose_run

    model = DetectorPositionModel(custom_poni(), StagePosition(2.0, -1.0, 260.0))
    ref = model.reference_position
    data = {"reference_x": ref.x, "reference_y": ref.y, "reference_distance": ref.distance, **model_data(model),
            "residual_rms": 1e-4}
    keys = dict(MODEL_KEYS)
    if not with_json:  # as recorded before model_json was
        del data["model_json"], keys["model_json"]
    bundle = compose_run(metadata={"purpose": "derived", "analysis": "calibration", "parent_uids": ["raw-custom"]})
    descriptor = bundle.compose_descriptor(name="model", data_keys=keys)
    writer = processed_writer(catalog)
    try:
        for name, doc in (("start", bundle.start_doc), ("descriptor", descriptor.descriptor_doc),
                          ("event", descriptor.compose_event(data=data, timestamps={k: 0.0 for k in data})),
                          ("stop", bundle.compose_stop(exit_status="success"))):
            writer(name, doc)
    finally:
        writer.close()
    geometry = geometry_from_calibration(catalog.processed[bundle.start_doc["uid"]])
    assert geometry.model == model
    assert geometry.model.reference.detector_config == custom_poni().detector_config != ""
    assert geometry.poni(StagePosition(2.0, -1.0, 260.0), None).detector_model().shape == (300, 200)


def test_replay_restores_the_polarization_factor_and_the_beamstop_margin(RE, catalog, beamline):
    """A measurement integrated live with a polarization factor and a beamstop margin no
    default has: its replay runs with both, and its patterns are the live ones."""
    bl = beamline
    instrument = InstrumentSettings(beamstop=bl.config.beamstop, polarization_factor=0.5)
    raw, processed = catalog_writers(catalog)
    RE.subscribe(raw)
    RE.subscribe(AnalysisRouter(processed, lambda detector_name: GeometrySource(bl.true_geometry(), "simulator_truth"),
                                setup=lambda start: RunSetup(dict(start), instrument), beamstop_margin_mm=4.0))
    try:
        bl.sample_changer.slot.put("CeO2")
        (uid,) = RE(multi_position_count([bl.detector], bl.stage, [(0.0, 0.0, 300.0)], energy=bl.source.energy))
    finally:
        raw.close()
        processed.close()
    (live,) = [r for r in catalog.processed.search(Contains("parent_uids", uid)).values()]
    assert live.stop["exit_status"] == "success", live.stop["reason"]
    (again,) = replay(catalog, uid)
    replayed = catalog.processed[again.uid]
    assert replayed.stop["exit_status"] == "success", replayed.stop["reason"]
    for run in (live, replayed):
        parameters = IntegrationParameters.from_dict(run.start["parameters"])
        assert (parameters.polarization_factor, parameters.beamstop_margin_mm) == (0.5, 4.0)
        assert parameters.instrument.beamstop == bl.config.beamstop
    np.testing.assert_array_equal(replayed["primary"]["intensity_q"].read(), live["primary"]["intensity_q"].read())
