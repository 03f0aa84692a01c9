"""The file sink: derived runs of the live router (a tensile series with peak fits, a
nickel PDF, a gain map; calibrations composed as the calibration analysis emits them)
written as .xye/.chi, .csv, .poni and goniometer JSON, .tif/.edf and .gr files whose
numbers are the derived streams' and whose headers name the run's provenance."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from urllib.parse import unquote

import fabio
import numpy as np
import pyFAI
import pytest
from bluesky import RunEngine
from event_model import compose_run

from xrd_bluesky import __version__
from xrd_bluesky.callbacks import AnalysisRouter
from xrd_bluesky.callbacks.derived import data_keys
from xrd_bluesky.errors import OutputError
from xrd_bluesky.plans import gain_map_scan, multi_position_count, strain_series
from xrd_bluesky.science.calibration.geometry_source import GeometrySource
from xrd_bluesky.science.calibration.position_models import (
    ArmModel,
    ArmPosition,
    read_goniometer_json,
)
from xrd_bluesky.science.geometry import DetectorPositionModel, Poni, StagePosition
from xrd_bluesky.science.units import wavelength_m
from xrd_bluesky.sim_devices import BeamlineConfig, make_beamline
from xrd_bluesky.store.file_export import FileExporter

#: The calibration the router's geometry claims to come from: its uid must reach every header.
CALIBRATION_UID = "cal-0123"
PEAKS = {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2]], "model": "pseudo-voigt"}
PDF = {"rpoly": 0.9, "qmin": 0.5, "qmax": 24.0, "qmaxinst": 25.0, "rmax": 20.0}
GEOMETRY = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Derived documents of the live router (no catalog), by analysis: (start, [(name, doc)])."""
    bl = make_beamline(BeamlineConfig(detector="Pilatus1M", seed=7), data_dir=tmp_path_factory.mktemp("frames"))
    documents = []
    geometry = GeometrySource(bl.true_geometry(), "calibration", CALIBRATION_UID)
    router = AnalysisRouter(lambda name, doc: documents.append((name, doc)), lambda detector: geometry,
                            setup=bl.description.run_setup, npt=800)
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(router)
    common = dict(shutter=bl.source.shutter, energy=bl.source.energy)
    bl.sample_changer.slot.put("Mg")
    RE(strain_series([bl.detector, bl.i0, bl.it], bl.sample_changer.strain, [0.0, 3e-3], peaks=PEAKS, stage=bl.stage,
                     sample=bl.sample_changer.sample().metadata(), integration={"cake": [400, 12], "split": "no"},
                     **common))
    bl.source.energy.put(100.0)
    bl.source.flux.put(1e11)
    bl.sample_changer.slot.put("Ni")
    RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, [(0.0, 0.0, 150.0)],
                            sample=bl.sample_changer.sample().metadata(), md={"pdf": PDF}, **common))
    bl.source.energy.put(17.0)
    bl.source.flux.put(2e12)
    bl.sample_changer.slot.put("glass")
    RE(gain_map_scan(bl.detector, bl.stage, [(0, 0, 300), (0, 12, 300)], frames_per_position=1,
                     geometry=bl.true_geometry(), beamstop=bl.config.beamstop, **common))
    documents += calibration_documents("stage") + calibration_documents("arm")
    runs: dict[str, tuple[dict, list]] = {}
    run_of = {doc["uid"]: doc["run_start"] for name, doc in documents if name == "descriptor"}
    for name, doc in documents:
        if name == "start":
            runs.setdefault(doc["analysis"], (doc, []))
    for start, docs in runs.values():
        docs.extend((name, doc) for name, doc in documents
                    if start["uid"] in (doc["uid"], doc.get("run_start"), run_of.get(doc.get("descriptor"))))
    directory = tmp_path_factory.mktemp("export")
    exporter = FileExporter(directory)
    for name, doc in documents:
        exporter(name, doc)
    assert exporter.failures == []
    return runs, exporter


def calibration_documents(kind: str) -> list[tuple[str, dict]]:
    """A calibration run as :class:`~xrd_bluesky.callbacks.calibration.GeometryCalibration`
    emits it: ``positions`` (geometry per detector position) and ``model`` (``model_json``)."""
    reference = Poni(0.25, 0.0842, 0.0891, rot1=0.011, rot2=-0.007, rot3=1e-4, wavelength=wavelength_m(17.0),
                     detector="Pilatus1M")
    if kind == "stage":
        model = DetectorPositionModel(reference, StagePosition(0.0, 0.0, 250.0))
        positions = [StagePosition(0.0, 0.0, 250.0), StagePosition(12.0, -8.0, 290.0)]
        extra = [{"stage_x": p.x, "stage_y": p.y, "stage_distance": p.distance} for p in positions]
    else:
        model = ArmModel(reference, offset_deg=0.3, calibrated_range_deg=(0.0, 30.0))
        positions = [ArmPosition(0.0), ArmPosition(15.0), ArmPosition(30.0)]
        extra = [{"arm_angle": p.angle, "arm_translation": 0.0} for p in positions]
    bundle = compose_run(metadata={"purpose": "derived", "analysis": "calibration", "parent_uids": [f"raw-{kind}"],
                                   "parameters": {"calibrant": "CeO2", "nominal": model.as_dict()},
                                   "calibrant": "CeO2", "energy_keV": 17.0, "xrd_bluesky_version": __version__})
    units = {"stage_x": "mm", "stage_y": "mm", "stage_distance": "mm", "arm_angle": "deg", "arm_translation": "mm",
             **{k: "rad" if k.startswith("rot") else "m" for k in GEOMETRY}}
    docs = [("start", bundle.start_doc)]
    for stream, rows in (("positions", [{**e, **{k: getattr(model.poni_at(p), k) for k in GEOMETRY}, "rings": 5}
                                        for p, e in zip(positions, extra)]),
                         ("model", [{"residual_rms": 1e-4, "model_json": json.dumps(model.as_dict())}])):
        desc = bundle.compose_descriptor(name=stream, data_keys=data_keys(rows[0], units))
        docs.append(("descriptor", desc.descriptor_doc))
        docs += [("event", desc.compose_event(data=row, timestamps={k: 0.0 for k in row}, seq_num=i))
                 for i, row in enumerate(rows, start=1)]
    return docs + [("stop", bundle.compose_stop(exit_status="success"))]


def folder(made, analysis: str, start: dict | None = None) -> Path:
    runs, exporter = made
    return exporter.folders[(start or runs[analysis][0])["uid"]]


def events(docs: list, stream: str) -> list[dict]:
    """The events' data of ``stream`` in one run's documents."""
    uids = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d["data"] for n, d in docs if n == "event" and d["descriptor"] in uids]


def header(path: Path, prefix: str = "# ", sep: str = ": ") -> dict[str, str]:
    """The ``prefix key sep value`` lines of a file's header."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line[len(prefix):].split(sep, 1) for line in lines if line.startswith(prefix) and sep in line)


def assert_provenance(values: dict[str, str], start: dict, **expected: str) -> None:
    """The header names the run, its parents, calibration, gain map, parameters, versions."""
    assert values["derived_uid"] == start["uid"] and values["analysis"] == start["analysis"]
    assert values["parent_uids"] == ", ".join(start["parent_uids"])
    assert json.loads(values["parameters"]) == json.loads(json.dumps(start["parameters"]))
    assert values["xrd_bluesky_version"] == start["xrd_bluesky_version"] == __version__
    assert values["pyFAI_version"] == str(pyFAI.version)
    for key, value in {"gain_map_uid": "none", **expected}.items():
        assert values[key] == value, key


def read_xye(path: Path) -> np.ndarray:
    return np.loadtxt(path, comments="#")


def test_integration_patterns_are_the_streams(made):
    runs, _ = made
    start, docs = runs["integration"]
    out = folder(made, "integration")
    for data in events(docs, "primary"):
        name = f"frame_{data['parent_seq_num']:05d}"
        for tag, keys in (("q", ("q", "intensity_q", "sigma_q")),
                          ("2th", ("two_theta", "intensity_2theta", "sigma_2theta"))):
            expected = np.column_stack([np.asarray(data[k], float) for k in keys])
            expected = expected[np.isfinite(expected).all(axis=1)]
            assert len(expected) > 700
            np.testing.assert_allclose(read_xye(out / f"{name}_{tag}.xye"), expected, rtol=1e-7)
            chi = np.loadtxt(out / f"{name}_{tag}.chi", skiprows=4)
            np.testing.assert_allclose(chi, expected[:, :2], rtol=1e-7)
        values = header(out / f"{name}_q.xye")
        assert_provenance(values, start, calibration_uid=CALIBRATION_UID)
        assert values["radial"] == "q_nm^-1 (1/nm)" and values["intensity"].startswith("counts per steradian")
        assert values["event.parent_seq_num"] == str(data["parent_seq_num"])
        assert float(values["event.i0"].split()[0]) == data["i0"] and values["event.i0"].endswith(" counts")
        # GSAS-II reads a 2-theta .xye whose header holds a lowercase q as a q pattern
        text = (out / f"{name}_2th.xye").read_text(encoding="utf-8")
        assert "q" not in "".join(line for line in text.splitlines() if line.startswith("#"))
        two_theta = header(out / f"{name}_2th.xye")
        assert json.loads(two_theta["parameters"]) == json.loads(values["parameters"])
    final = events(docs, "stitched_absolute")[-1]
    expected = np.column_stack([np.asarray(final[k], float) for k in ("q", "intensity", "sigma")])
    np.testing.assert_allclose(read_xye(out / "stitched_absolute_q.xye"),
                               expected[np.isfinite(expected).all(axis=1)], rtol=1e-7)
    values = header(out / "stitched_absolute_q.xye")
    assert values["intensity"].startswith("1/cm/sr") and values["event.final"] == "True"


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(line for line in path.read_text(encoding="utf-8").splitlines()
                           if not line.startswith("#")))
    return rows[0], rows[1:]


def same(cell: str, value) -> bool:
    """A CSV cell is the stream's value exactly (text, bool, or float incl. NaN)."""
    if isinstance(value, (str, bool, np.bool_)):
        return cell == str(value)
    return float(cell) == float(value) or (math.isnan(float(cell)) and math.isnan(float(value)))


def test_peak_fits_csv_rows_are_the_stream_values(made):
    runs, _ = made
    start, docs = runs["peak_fits"]
    integration = runs["integration"][0]
    out = folder(made, "peak_fits")
    columns, rows = read_csv(out / "peak_fits.csv")
    assert columns[:3] == ["parent_seq_num (1)", "sample_changer_strain (1)", "peak (text)"]
    assert {"centre_2theta (deg)", "centre_q (1/nm)", "fwhm_2theta (deg)", "fwhm_2theta_sigma (deg)", "d (A)",
            "d_sigma (A)", "strain (1)", "strain_sigma (1)", "success (bool)"} <= set(columns)
    fits = events(docs, "primary")
    labels = ["Mg_100", "Mg_002"]
    assert len(rows) == len(fits) * len(labels) == 4
    for row, (data, label) in zip(rows, [(d, lb) for d in fits for lb in labels]):
        assert row[2] == label and int(row[0]) == data["parent_seq_num"]
        for column, cell in zip(columns[3:], row[3:]):
            assert same(cell, data[f"{label}_{column.rsplit(' (', 1)[0]}"]), column
    columns, rows = read_csv(out / "directional_strain.csv")
    assert "strain_loading (1)" in columns and "strain_transverse_sigma (1)" in columns
    sectors = events(docs, "sectors")
    for row, (data, label) in zip(rows, [(d, lb) for d in sectors for lb in labels]):
        assert row[2] == label
        for column, cell in zip(columns[3:], row[3:]):
            assert same(cell, data[f"{label}_{column.rsplit(' (', 1)[0]}"]), column
    values = header(out / "peak_fits.csv")
    assert_provenance(values, start, calibration_uid=CALIBRATION_UID)  # from the integration it fits
    assert values["raw_uids"] == ", ".join(integration["parent_uids"])


def test_calibration_poni_and_goniometer_reload_to_the_geometry(made):
    runs, exporter = made
    calibrations = [uid for uid, path in exporter.folders.items() if path.name.startswith("calibration_")]
    assert len(calibrations) == 2
    for uid in calibrations:
        out = exporter.folders[uid]
        positions = sorted(out.glob("position_*.poni"))
        gonio = read_goniometer_json(out / "goniometer.json")
        for i, path in enumerate(positions):
            ai = pyFAI.load(str(path))
            values = header(path)
            assert values["derived_uid"] == uid and values["calibration_uid"] == uid
            assert values["position"].startswith(f"{i} (")
            model_poni = gonio.poni_at(_position(values["position"]))
            for key in GEOMETRY:
                assert abs(getattr(ai, key) - getattr(model_poni, key)) < 1e-9, (path, key)
            assert ai.detector.name == "Pilatus 1M"
        content = json.loads((out / "goniometer.json").read_text(encoding="utf-8"))
        assert content["xrd_bluesky"]["provenance"]["derived_uid"] == uid
        assert len(positions) == (2 if isinstance(gonio, DetectorPositionModel) else 3)
        assert (out / "model_reference.poni").exists() == isinstance(gonio, DetectorPositionModel)


def _position(text: str):
    """The position of a PONI header's ``position`` line, e.g. ``1 (stage_x 12 mm, ...)``."""
    values = dict(part.rsplit(" ", 2)[:2] for part in text.split("(", 1)[1].rstrip(")").split(", "))
    if "arm_angle" in values:
        return ArmPosition(float(values["arm_angle"]))
    return StagePosition(float(values["stage_x"]), float(values["stage_y"]), float(values["stage_distance"]))


def test_gain_map_tif_and_edf_are_the_array_and_its_mask(made):
    runs, _ = made
    start, docs = runs["gain_map"]
    out = folder(made, "gain_map")
    data = events(docs, "gain_map")[0]
    bad = np.asarray(data["bad"]).astype(bool)
    assert 0 < bad.sum() < bad.size
    gain = np.where(bad, np.nan, np.asarray(data["gain"], np.float32))
    for suffix in ("tif", "edf"):
        image = fabio.open(str(out / f"gain.{suffix}"))
        assert image.data.dtype == np.float32
        np.testing.assert_array_equal(image.data, gain)
        np.testing.assert_array_equal(fabio.open(str(out / f"mask.{suffix}")).data, bad.astype(np.uint8))
    edf = {k: unquote(v) for k, v in fabio.open(str(out / "gain.edf")).header.items()}
    assert_provenance(edf, start, calibration_uid=CALIBRATION_UID, gain_map_uid=start["uid"])
    assert json.loads(edf["geometry"])["calibration_uid"] == CALIBRATION_UID
    description = fabio.open(str(out / "gain.tif")).header["imageDescription"]
    tif = dict(line.split("=", 1) for line in description.splitlines())
    assert_provenance(tif, start, calibration_uid=CALIBRATION_UID, gain_map_uid=start["uid"])
    assert tif["convention"].startswith("corrected = raw / gain")


def test_pdf_files_are_the_streams(made):
    runs, _ = made
    start, docs = runs["pdf"]
    out = folder(made, "pdf")
    for stream, (x, y) in {"gr": ("r", "gr"), "sq": ("q", "sq"), "fq": ("q", "fq")}.items():
        data = events(docs, stream)[0]
        path = out / f"frame_{data['parent_seq_num']:05d}.{stream}"
        lines = path.read_text(encoding="utf-8").splitlines()
        start_line = lines.index("#### start data")
        assert lines[start_line + 1] == "#S 1" and lines[start_line + 2].startswith("#L ")
        columns = np.loadtxt(lines[start_line + 3:])
        np.testing.assert_allclose(columns, np.column_stack([data[x], data[y]]), rtol=1e-9, atol=1e-12)
        assert_provenance(header(path, sep=" = "), start, calibration_uid=CALIBRATION_UID)
    assert (out / "stitched.gr").exists()


def test_unwritable_directory_is_named_and_never_raised_live(made, tmp_path):
    runs, _ = made
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="a_file"):
        FileExporter(blocker)
    start, docs = runs["integration"]
    exporter = FileExporter(tmp_path / "out")
    (tmp_path / "out" / f"integration_Mg_{start['uid'][:8]}").write_text("in the way")
    for name, doc in docs + runs["gain_map"][1]:
        exporter(name, doc)  # a live sink: nothing raised
    assert len(exporter.failures) == 1 and start["uid"] in exporter.failures[0]
    assert (exporter.folders[runs["gain_map"][0]["uid"]] / "gain.tif").exists()  # the other runs go on
    with pytest.raises(OutputError, match=start["uid"]):
        exporter.check()
