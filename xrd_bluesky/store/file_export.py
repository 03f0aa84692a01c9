"""The file sink: derived runs written as files that other programs read.

:class:`FileExporter` receives the documents of derived runs (what the
:class:`~xrd_bluesky.callbacks.AnalysisRouter` emits, live or in a replay) and writes
what the catalog holds of each run into ``DIR/<analysis>_<sample>_<uid[:8]>/``:

``integration``  per frame ``frame_<raw seq_num>_q.xye`` / ``_2th.xye`` and ``.chi``
                 (counts/sr), ``frame_<n>_absolute_q.xye`` (1/cm/sr), and
                 ``stitched_q``, ``stitched_2th``, ``stitched_absolute_q``,
                 ``subtracted_q`` (``.xye``, ``.chi``), rewritten at every stitched
                 event so that the final one stays (2-theta headers write a lowercase
                 q as ``\\u0071``: GSAS-II reads a header with one as a q pattern);
``peak_fits``    ``peak_fits.csv`` (one row per event and peak: position, FWHM, d,
                 strain and their sigmas) and, with sector fits,
                 ``directional_strain.csv`` (strain along and across the load);
``calibration``  ``position_<n>.poni`` per detector position, ``model_reference.poni``
                 of a stage model, and ``goniometer.json`` (pyFAI's goniometer file) of
                 an arm model or a stage calibrated at several positions;
``gain_map``     ``gain.tif`` and ``gain.edf`` (float32, ``corrected = raw / gain``,
                 NaN at bad pixels) and ``mask.tif``, ``mask.edf`` (uint8, 1 = bad);
``pdf``          per frame ``frame_<n>.sq``, ``.fq``, ``.gr`` and ``stitched.*``, as
                 PDFgetX3 writes them.

Every file's header (``#`` lines, the TIFF description, the EDF header, the goniometer
JSON's ``xrd_bluesky.provenance``) names the derived run, its parent and raw runs, the
calibration and gain map, the analysis and its parameters (one line of JSON) and the
versions of xrd-bluesky and pyFAI, as the derived start document records them
(:func:`provenance`); chained runs (peak fits, PDFs) name the calibration and gain map
of the integration they come from.

A sink is optional: whatever goes wrong with a run's files (a full disk, a directory
made read-only) is logged with its traceback and recorded in
:attr:`FileExporter.failures`; the run's other documents are then ignored, the other
runs go on, and no exception reaches the caller, so a live scan never stops for it
(:func:`~xrd_bluesky.isolation.isolated`, whose debug switch lets it through).
:meth:`FileExporter.check` raises the failures as an :class:`OutputError` for a command
that must say so. An unwritable ``DIR`` is refused when the exporter is made.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
from event_model import DocumentRouter, RunRouter

from ..errors import OutputError
from ..isolation import isolated
from ..outputs import check_writable, verify_written
from ..paths import safe_child
from ..science.calibration.position_models import (
    EXTRA_KEY,
    ArmModel,
    position_model_from_dict,
    write_goniometer_json,
)
from ..science.reduction.integration import IntegrationResult
from ..science.units import wavelength_m
from .pattern_files import (
    ABSOLUTE_INTENSITY,
    STERADIAN_INTENSITY,
    one_line,
    software_versions,
    write_chi,
    write_pdfgetx3_columns,
    write_text,
    write_xye,
)

logger = logging.getLogger(__name__)

#: Start-document keys naming other runs, in the order headers give them.
RUN_KEYS = ("parent_uids", "raw_uids", "calibration_uid", "gain_map_uid", "background_uid", "dark_uid",
            "standard_uid", "d0_uid", "replay_of")
#: Keys chained runs take from the run they are derived from when their own start has none.
INHERITED_KEYS = ("calibration_uid", "gain_map_uid")
#: The key a run of each analysis is itself known by in other runs' start documents.
OWN_KEYS = {"calibration": "calibration_uid", "gain_map": "gain_map_uid"}
#: Start documents kept for the lineage of chained runs.
KEPT_STARTS = 256
#: The pyFAI radial unit of a derived data key's unit.
RADIAL_UNITS = {"1/nm": "q_nm^-1", "1/A": "q_A^-1", "deg": "2th_deg"}
#: File-name tag of each radial unit.
UNIT_TAGS = {"q_nm^-1": "q", "q_A^-1": "q", "2th_deg": "2th"}
#: What an intensity unit of the integration is, for the ``.xye`` header.
INTENSITY_LABELS = {"counts/sr": STERADIAN_INTENSITY, "1/cm/sr": ABSOLUTE_INTENSITY}
#: Patterns of each integration stream: (radial, intensity, sigma) keys.
PATTERN_KEYS = {
    "primary": (("q", "intensity_q", "sigma_q"), ("two_theta", "intensity_2theta", "sigma_2theta")),
    "stitched": (("q", "intensity", "sigma"), ("two_theta", "intensity_2theta", "sigma_2theta")),
    "absolute": (("q", "intensity", "sigma"),),
    "stitched_absolute": (("q", "intensity", "sigma"),),
    "subtracted": (("q", "intensity", "sigma"),),
}
#: Streams with one pattern per raw frame (named by it); the others are rewritten.
PER_FRAME = {"primary": "", "absolute": "_absolute"}
#: CSV file of each peak-fit stream.
FIT_FILES = {"primary": "peak_fits.csv", "sectors": "directional_strain.csv"}
#: The geometry keys of a calibration's streams (PONI lengths and wavelength in m, rotations in rad).
PONI_KEYS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
#: EDF header values cannot hold these: they are written percent-encoded.
EDF_RESERVED = {"%": "%25", "{": "%7B", "}": "%7D", ";": "%3B"}


def provenance(start: dict, inherited: dict | None = None) -> dict[str, str]:
    """What every exported file's header says of the derived run that ``start`` opens.

    Parameters
    ----------
    start : dict
        The derived run's start document.
    inherited : dict, optional
        :data:`INHERITED_KEYS` of the run it is derived from (for chained runs).

    Returns
    -------
    dict
        One-line text values: ``derived_uid``, ``analysis``, the uids of :data:`RUN_KEYS`
        (``parent_uids``, ``calibration_uid`` and ``gain_map_uid`` always, ``none``
        where there is none; a calibration or gain map is its own), ``sample``,
        ``energy_keV``, ``replay``, ``geometry`` and ``parameters`` (JSON), the recorded
        ``xrd_bluesky_version`` and the pyFAI version.
    """
    known = {"parent_uids": None, **dict.fromkeys(INHERITED_KEYS), **(inherited or {}),
             **{k: start[k] for k in RUN_KEYS if k in start}}
    if start.get("analysis") in OWN_KEYS:
        known[OWN_KEYS[start["analysis"]]] = start["uid"]
    runs = {k: ", ".join(v) if isinstance(v, list) else v for k, v in known.items()}
    header = {"derived_uid": start["uid"], "analysis": start.get("analysis"), **runs,
              "sample": (start.get("sample") or {}).get("name"),
              "energy_keV": start.get("energy_keV"), "replay": start.get("replay", False)}
    if "geometry" in start:
        header["geometry"] = _json(start["geometry"])
    header["parameters"] = _json(start.get("parameters", {}))
    header.update(software_versions())
    header["xrd_bluesky_version"] = start.get("xrd_bluesky_version", header["xrd_bluesky_version"])
    return {k: one_line(v) for k, v in header.items()}


def _json(value) -> str:
    """``value`` as one line of JSON (non-JSON values as their text)."""
    return json.dumps(value, separators=(", ", ": "), default=str)


class FileExporter(RunRouter):
    """Write every derived run it receives as files into ``directory``.

    Call it as ``exporter(name, doc)`` with each derived document (an ``emit`` of the
    analysis router or of :func:`~xrd_bluesky.store.replay.replay`); documents are
    never mutated, raw runs are ignored.

    Parameters
    ----------
    directory : str or Path
        Where each derived run gets its folder (created if missing).

    Attributes
    ----------
    folders : dict
        The folder of each derived run that wrote files, by uid.
    files_written : int
        File writes (a stitched pattern rewritten, a CSV appended to, counts each time).
    failures : list of str
        Why a run's files could not be written, one per run (its uid named).

    Raises
    ------
    OutputError
        ``directory`` cannot be created or written.
    """

    def __init__(self, directory: str | Path):
        self.directory = check_writable(directory, directory=True)
        self.folders: dict[str, Path] = {}
        self.files_written = 0
        self.failures: list[str] = []
        self._starts: OrderedDict[str, dict] = OrderedDict()
        super().__init__([self._factory])

    def _not_exported(self, name: str, doc: dict, validate: bool = False, *, exc: Exception):
        """The reaction to a failure (e.g. a start document without what a header needs; see
        :func:`~xrd_bluesky.isolation.isolated`): logged and recorded in :attr:`failures`."""
        logger.exception("%s document %s not exported", name, doc.get("uid"))
        self.failures.append(f"{name} document {doc.get('uid')}: {type(exc).__name__}: {exc}")
        return name, doc

    @isolated(_not_exported)
    def __call__(self, name: str, doc: dict, validate: bool = False):
        return super().__call__(name, doc, validate)

    def _factory(self, name: str, start: dict) -> tuple[list, list]:
        self._starts[start["uid"]] = {k: start[k] for k in (*INHERITED_KEYS, "parent_uids") if k in start}
        while len(self._starts) > KEPT_STARTS:
            self._starts.popitem(last=False)
        kind = EXPORTS.get(start.get("analysis")) if start.get("purpose") == "derived" else None
        return ([kind(self, start)] if kind else []), []

    def inherited(self, start: dict) -> dict:
        """:data:`INHERITED_KEYS` of the run ``start`` is derived from (and its own ancestors)."""
        out: dict = {}
        for parent in start.get("parent_uids", []):
            known = self._starts.get(parent)
            if known is not None:
                out.update({**self.inherited(known), **{k: known[k] for k in INHERITED_KEYS if k in known}})
        return out

    def check(self) -> None:
        """Raise :class:`OutputError` naming every run whose files could not be written."""
        if self.failures:
            raise OutputError("; ".join(self.failures))


class RunFiles(DocumentRouter):
    """The files of one derived run; subclasses write those of their analysis.

    A failure is logged, recorded in the exporter's ``failures`` and ends the run's
    export: it never propagates.
    """

    def __init__(self, exporter: FileExporter, start: dict):
        super().__init__()
        self.exporter = exporter
        self.start_doc = start
        self.header = provenance(start, exporter.inherited(start))
        self.descriptors: dict[str, dict] = {}
        self._folder: Path | None = None
        self._failed = False

    def _not_written(self, name: str, doc: dict, validate: bool = False, *, exc: Exception):
        """The reaction to a failure (see :func:`~xrd_bluesky.isolation.isolated`): logged,
        recorded in the exporter's ``failures``, and the run's later documents ignored."""
        self._failed = True
        uid = self.start_doc["uid"]
        logger.exception("derived run %s: its files in %s could not be written", uid, self.exporter.directory)
        self.exporter.failures.append(f"derived run {uid} ({self.start_doc.get('analysis')}): "
                                      f"{type(exc).__name__}: {exc}")
        return name, doc

    @isolated(_not_written)
    def __call__(self, name: str, doc: dict, validate: bool = False):
        if self._failed:
            return name, doc
        return super().__call__(name, doc, validate)

    def descriptor(self, doc):
        self.descriptors[doc["uid"]] = doc

    @property
    def folder(self) -> Path:
        """The run's folder, created at its first file."""
        if self._folder is None:
            sample = re.sub(r"[^A-Za-z0-9._-]+", "_", self.header["sample"])[:40]
            parts = [self.start_doc.get("analysis", "derived"), "" if sample == "none" else sample,
                     self.start_doc["uid"][:8]]
            self._folder = check_writable(safe_child(self.exporter.directory, "_".join(p for p in parts if p)),
                                          directory=True)
            self.exporter.folders[self.start_doc["uid"]] = self._folder
        return self._folder

    def path(self, name: str) -> Path:
        """``name`` in the run's folder, counted as a write."""
        self.exporter.files_written += 1
        return safe_child(self.folder, name)

    def event_values(self, doc: dict) -> dict[str, str]:
        """The event's stream and numbers, and its scalar data with their units, for a header."""
        descriptor = self.descriptors[doc["descriptor"]]
        values = {"stream": descriptor["name"], "event": str(doc["seq_num"])}
        for key, spec in descriptor["data_keys"].items():
            if not spec.get("shape"):
                values[f"event.{key}"] = f"{doc['data'][key]} {spec.get('units', '')}".strip()
        return values


class IntegrationFiles(RunFiles):
    """``.xye`` and ``.chi`` of every pattern of an integration run."""

    def event(self, doc):
        descriptor = self.descriptors[doc["descriptor"]]
        stream = descriptor["name"]
        data = doc["data"]
        for keys in PATTERN_KEYS.get(stream, ()):
            radial_unit = RADIAL_UNITS[descriptor["data_keys"][keys[0]]["units"]]
            result = IntegrationResult(*(np.asarray(data[k], dtype=float) for k in keys), radial_unit)
            name = (f"frame_{int(data['parent_seq_num']):05d}{PER_FRAME[stream]}" if stream in PER_FRAME
                    else stream) + f"_{UNIT_TAGS[radial_unit]}"
            header = {**self.header, **self.event_values(doc)}
            if radial_unit == "2th_deg":
                header = _without_lowercase_q(header)
            intensity = descriptor["data_keys"][keys[1]].get("units", "")
            write_xye(self.path(f"{name}.xye"), result, header, wavelength_m=self._wavelength_m,
                      intensity_label=INTENSITY_LABELS.get(intensity, intensity))
            write_chi(self.path(f"{name}.chi"), result, f"{name} ({intensity}) of derived run {self.start_doc['uid']}")

    @property
    def _wavelength_m(self) -> float | None:
        """The wavelength (m) of the run's photon energy, for GSAS-II's line of q patterns."""
        energy = self.start_doc.get("energy_keV")
        return None if energy is None else wavelength_m(float(energy))


def _without_lowercase_q(header: dict[str, str]) -> dict[str, str]:
    """``header`` with every lowercase q written ``\\u0071`` (JSON reads it back as q):
    GSAS-II reads an ``.xye`` file whose header has a lowercase q as a q pattern."""
    escaped = {k.replace("q", "\\u0071"): v.replace("q", "\\u0071") for k, v in header.items()}
    return {"header_encoding": "lowercase Q written as \\u0071 (GSAS-II reads a header with it as a Q pattern)",
            **escaped}


class PeakFitFiles(RunFiles):
    """CSV files of a peak-fits run: one row per event and peak, units in the column names.

    The columns are the event's scalar data that belong to no peak (``parent_seq_num``,
    the scanned variables), ``peak``, then each peak's scalar values by name
    (``centre_2theta (deg)``, ``d (A)``, ``strain (1)``...). Rows are appended as
    events arrive, after ``#`` header lines naming the run and the fits' configuration
    (windows, d0 and where it came from).
    """

    def event(self, doc):
        descriptor = self.descriptors[doc["descriptor"]]
        if descriptor["name"] not in FIT_FILES:
            return
        path = self.path(FIT_FILES[descriptor["name"]])
        common, per_peak, labels = _fit_columns(descriptor)
        new = not path.exists()
        buffer = io.StringIO()
        if new:
            config = {name: values.get("data", {}) for name, values in descriptor.get("configuration", {}).items()}
            lines = [*(f"# {k}: {v}" for k, v in self.header.items()), f"# configuration: {_json(config)}",
                     "# rows: one per event and peak; (1) = dimensionless"]
            buffer.write("\n".join(lines) + "\n")
        writer = csv.writer(buffer, lineterminator="\n")
        if new:
            units = descriptor["data_keys"]
            writer.writerow([_column(k, units[k]) for k in common] + ["peak (text)"]
                            + [_column(s, units[f"{labels[0]}_{s}"]) for s in per_peak])
        data = doc["data"]
        for label in labels:
            writer.writerow([_cell(data[k]) for k in common] + [label]
                            + [_cell(data[f"{label}_{s}"]) for s in per_peak])
        try:
            with open(path, "a", encoding="utf-8", newline="") as f:
                f.write(buffer.getvalue())
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _fit_columns(descriptor: dict) -> tuple[list[str], list[str], list[str]]:
    """The scalar data keys of a fit stream that belong to no peak, the per-peak
    suffixes (in the stream's order) and the peak labels."""
    peaks = descriptor.get("configuration", {}).get("peaks", {}).get("data", {})
    labels = [k[:-len("_window_low")] for k in peaks if k.endswith("_window_low")]
    scalar = [k for k, spec in descriptor["data_keys"].items() if not spec.get("shape")]
    owner = {k: next((lb for lb in sorted(labels, key=len, reverse=True) if k.startswith(f"{lb}_")), None)
             for k in scalar}
    suffixes = [k[len(labels[0]) + 1:] for k in scalar if owner[k] == labels[0]]
    return [k for k in scalar if owner[k] is None], suffixes, labels


def _column(name: str, spec: dict) -> str:
    """A CSV column name with its unit: ``(1)`` dimensionless, ``(text)``, ``(bool)``."""
    kind = {"string": "text", "boolean": "bool"}.get(spec.get("dtype"))
    return f"{name} ({kind or spec.get('units') or '1'})"


def _cell(value) -> str:
    """A CSV cell: numbers as Python writes them (exact round trip), text on one line."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(int(value))
    return one_line(value)


class CalibrationFiles(RunFiles):
    """PONI files of every detector position, and the model as PONI and pyFAI goniometer JSON."""

    def __init__(self, exporter: FileExporter, start: dict):
        super().__init__(exporter, start)
        self._positions: list[dict] = []

    def event(self, doc):
        stream = self.descriptors[doc["descriptor"]]["name"]
        if stream == "positions":
            self._positions.append(doc["data"])
        elif stream == "model":
            self._write(position_model_from_dict(json.loads(doc["data"]["model_json"])))

    def _write(self, model) -> None:
        for i, data in enumerate(self._positions):
            poni = dataclasses.replace(model.reference, **{k: float(data[k]) for k in PONI_KEYS})
            self._write_poni(f"position_{i}.poni", poni, {"position": f"{i} ({_position_text(data)})"})
        if not isinstance(model, ArmModel):
            self._write_poni("model_reference.poni", model.reference,
                             {"position": f"stage reference ({model.reference_position.as_dict()} mm)"})
        if isinstance(model, ArmModel) or len(self._positions) > 1:
            path = self.path("goniometer.json")
            write_goniometer_json(model, path)
            content = json.loads(path.read_text(encoding="utf-8"))
            content[EXTRA_KEY]["provenance"] = self.header
            write_text(path, json.dumps(content, indent=2))

    def _write_poni(self, name: str, poni, extra: dict) -> None:
        """pyFAI's PONI file of ``poni`` after ``#`` lines of the run's header and ``extra``."""
        path = self.path(name)
        poni.write(path)
        text = verify_written(path).read_text(encoding="utf-8")
        lines = [f"# {k}: {v}" for k, v in {**self.header, **extra}.items()]
        write_text(path, "\n".join(lines) + "\n" + text)


def _position_text(data: dict) -> str:
    """A detector position of a calibration's ``positions`` event, with units."""
    units = {"stage_x": "mm", "stage_y": "mm", "stage_distance": "mm", "arm_angle": "deg", "arm_translation": "mm"}
    return ", ".join(f"{k} {float(data[k]):g} {u}" for k, u in units.items() if k in data)


class GainMapFiles(RunFiles):
    """The gain map (float32, NaN at bad pixels) and its mask (uint8, 1 = bad) as TIFF and EDF."""

    def event(self, doc):
        if self.descriptors[doc["descriptor"]]["name"] != "gain_map":
            return
        bad = np.asarray(doc["data"]["bad"]).astype(bool)
        gain = np.where(bad, np.nan, np.asarray(doc["data"]["gain"], dtype=np.float32)).astype(np.float32)
        images = {"gain": (gain, "corrected = raw / gain (dimensionless, median 1), NaN = bad pixel"),
                  "mask": (bad.astype(np.uint8), "1 = bad pixel, 0 = good (True = bad)")}
        for name, (data, convention) in images.items():
            header = {**self.header, "image": name, "convention": convention}
            for suffix in ("tif", "edf"):
                self._write_image(self.path(f"{name}.{suffix}"), data, header)

    @staticmethod
    def _write_image(path: Path, data: np.ndarray, header: dict) -> None:
        """A TIFF (the header in its description) or an EDF (in its header) through fabio."""
        import fabio

        tmp = path.with_name(path.name + ".part")
        if path.suffix == ".edf":
            image = fabio.edfimage.EdfImage(data=data, header={k: _edf_value(v) for k, v in header.items()})
        else:
            image = fabio.tifimage.TifImage(data=data, header=header)
        try:
            image.write(str(tmp))
            tmp.replace(path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        verify_written(path)


def _edf_value(value: str) -> str:
    """``value`` with the characters an EDF header reserves (``{ } ;``) percent-encoded."""
    return "".join(EDF_RESERVED.get(c, c) for c in value)


class PDFFiles(RunFiles):
    """S(Q), F(Q) and G(r) of every pattern, as PDFgetX3 writes them."""

    def event(self, doc):
        stream = self.descriptors[doc["descriptor"]]["name"]
        kind = stream.removeprefix("stitched_")
        if kind not in ("sq", "fq", "gr"):
            return
        data = doc["data"]
        x = "r" if kind == "gr" else "q"
        name = "stitched" if stream.startswith("stitched_") else f"frame_{int(data['parent_seq_num']):05d}"
        header = [f"# {k} = {v}" for k, v in {**self.header, **self.event_values(doc)}.items()]
        write_pdfgetx3_columns(self.path(f"{name}.{kind}"), header, kind, data[x], data[kind])


#: The files of each analysis.
EXPORTS: dict[str, type[RunFiles]] = {"integration": IntegrationFiles, "peak_fits": PeakFitFiles,
                                      "calibration": CalibrationFiles, "gain_map": GainMapFiles, "pdf": PDFFiles}
