"""The beamline description: one TOML file that says what the hardware is.

It names the detector(s) (pyFAI model, the data key of the image, orientation,
saturation, static mask, the driver model strings that mean it), how each detector
moves (fixed, on a translation stage or on a 2theta arm: the motors' data keys) and
its nominal geometry, the photon energy (a data key or a value), the ion chambers and their flux
calibration, the beamstop, the polarization factor, the dark policy, and where frame
files may be read from (storage roots, spec aliases of ophyd v1 resources).

It is validated when loaded: every error names the file, the key and the value.
:data:`EXAMPLE` is a commented description (``xrd-bluesky beamline --example``).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BeamlineDescriptionError, GeometryError
from ..frames.resources import HANDLERS
from ..schema import InstrumentSettings, RunSetup
from ..schema.start import DETECTOR_NAME, ENERGY_KEV, IMAGE_KEY, MONITORS, MOUNT_KEYS, start_keys
from ..science.calibration.position_models import ARM_PLANES, ArmModel
from ..science.detector_pixels import Beamstop
from ..science.geometry import (
    STAGE_AXES,
    DetectorPositionModel,
    Poni,
    StagePosition,
    detector_model,
)
from ..science.reduction.monitors import FluxCalibration

#: How a detector may move: not at all, on a translation stage, on a 2theta arm (which
#: may carry a translation along the detector normal).
MOTION_KINDS = ("fixed", "stage", "arm")
#: Dark-frame policies: subtract a dark when the run has one (its ``dark`` stream or
#: a ``dark_uid``), refuse to integrate without one, or never subtract.
DARK_POLICIES = ("if_present", "required", "none")
#: Units the energy's data key may be in, and their size in keV.
ENERGY_UNITS = {"keV": 1.0, "eV": 1e-3}


@dataclass(frozen=True)
class DetectorMotion:
    """How a detector moves.

    ``kind`` ``"fixed"``; ``"stage"``: ``keys`` maps ``x``, ``y``, ``distance`` to
    motor data keys (mm) and the nominal geometry holds at stage position
    ``reference``; ``"arm"``: ``keys`` maps ``angle`` (deg) and optionally
    ``translation`` (mm, along the detector normal) to motor data keys, the arm turns
    in ``plane`` (``vertical`` or ``horizontal``), the nominal geometry holds where its
    rotation is zero, at reading ``offset_deg``, and it turns ``scale`` degrees per
    degree of reading (see :mod:`xrd_bluesky.science.calibration.position_models`).
    """

    kind: str = "fixed"
    keys: Mapping[str, str] = field(default_factory=dict)
    reference: StagePosition = StagePosition(0.0, 0.0, 0.0)
    plane: str = "vertical"
    offset_deg: float = 0.0
    scale: float = 1.0

    def model(self, nominal: Poni) -> DetectorPositionModel | ArmModel:
        """The detector-position model of this motion around the geometry ``nominal``."""
        if self.kind == "arm":
            return ArmModel(nominal, plane=self.plane, offset_deg=self.offset_deg, scale=self.scale,
                            carries_translation="translation" in self.keys)
        return DetectorPositionModel(nominal, self.reference)


@dataclass(frozen=True)
class DetectorDescription:
    """One area detector.

    Attributes
    ----------
    name : str
        The description's name for it (the TOML table ``[detectors.NAME]``).
    pyfai : str
        pyFAI detector class name (``Pilatus1M``, ``Detector`` for pixel sizes and a
        shape, ``NexusDetector`` for a NeXus detector file).
    pyfai_config : str
        pyFAI's detector configuration as JSON ("" for none): orientation, pixel sizes
        and shape, or the NeXus file.
    image_key : str or None
        The data key of the image in events (None: the run's only image key).
    models : tuple of str
        Driver model strings (e.g. ADPilatus' ``Pilatus``) that mean this detector;
        empty: the model string is not checked (the frame shape always is).
    saturation_counts : int or None
        Counter depth (counts); None: taken from the driver's ``max_count`` if any.
    mask_file : Path or None
        Static mask (any fabio format, non-zero = bad pixel).
    motion : DetectorMotion
        How it moves.
    nominal : Poni or None
        Nominal geometry (before any calibration; calibrations start from it).
    """

    name: str
    pyfai: str
    pyfai_config: str = ""
    image_key: str | None = None
    models: tuple[str, ...] = ()
    saturation_counts: int | None = None
    mask_file: Path | None = None
    motion: DetectorMotion = DetectorMotion()
    nominal: Poni | None = None

    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the detector's frames."""
        return tuple(detector_model(self.pyfai, self.pyfai_config).shape)

    def nominal_model(self) -> DetectorPositionModel | ArmModel | None:
        """The nominal geometry as a detector-position model (None if not described)."""
        return None if self.nominal is None else self.motion.model(self.nominal)

    @cached_property
    def mask(self) -> np.ndarray | None:
        """The static mask (True = bad), checked against the detector's shape; read once.

        Raises
        ------
        BeamlineDescriptionError
            The file cannot be read or its shape is not the detector's.
        """
        if self.mask_file is None:
            return None
        import fabio

        try:
            data = fabio.open(str(self.mask_file)).data
        except Exception as exc:  # fabio raises many types on bad files
            raise BeamlineDescriptionError(f"detectors.{self.name}.mask: cannot read {self.mask_file}: {exc}") from exc
        if tuple(data.shape) != self.shape():
            raise BeamlineDescriptionError(f"detectors.{self.name}.mask: {self.mask_file} has shape {data.shape}, "
                                           f"detector {self.pyfai} has {self.shape()}")
        return np.asarray(data) != 0


@dataclass(frozen=True)
class MonitorsDescription:
    """Ion chambers: data keys (counts) of the upstream ``i0`` and downstream ``it``
    chambers, I0's counts-to-flux calibration and the air transmission between them."""

    i0: str | None = None
    it: str | None = None
    flux_calibration: FluxCalibration | None = None
    air_transmission: float = 1.0

    def keys(self) -> dict[str, str]:
        """``{"i0": key, "it": key}`` of the described chambers."""
        return {k: v for k, v in (("i0", self.i0), ("it", self.it)) if v}


@dataclass(frozen=True)
class BeamlineDescription:
    """What the hardware of one beamline is (see the module docstring).

    Attributes
    ----------
    name : str
        The beamline's name.
    detectors : dict
        :class:`DetectorDescription` by name.
    energy_keV : float or None
        A fixed photon energy (keV), for runs that do not record ``energy_keV`` (plans
        given an ``energy`` signal record it).
    energy_key : str or None
        Or the data key of the energy (a monochromator signal read in the run's
        events or a device's configuration), in ``energy_units``.
    energy_units : str
        ``keV`` or ``eV``.
    monitors : MonitorsDescription
        Ion chambers.
    beamstop : Beamstop or None
        None: no beamstop is masked.
    polarization_factor : float or None
        pyFAI's polarization factor (None: not corrected).
    dark : str
        One of :data:`DARK_POLICIES`.
    storage_roots : tuple of Path
        Directories frame files may be read from (the embedded catalog serves them).
    spec_aliases : dict
        Beamline-specific resource specs and the known spec each one is.
    simulated : bool
        The description of the simulated beamline (``xrd-bluesky session`` builds it).
    source : Path or None
        The file it was read from.
    """

    name: str
    detectors: Mapping[str, DetectorDescription]
    energy_keV: float | None = None
    energy_key: str | None = None
    energy_units: str = "keV"
    monitors: MonitorsDescription = MonitorsDescription()
    beamstop: Beamstop | None = None
    polarization_factor: float | None = None
    dark: str = "if_present"
    storage_roots: tuple[Path, ...] = ()
    spec_aliases: Mapping[str, str] = field(default_factory=dict)
    simulated: bool = False
    source: Path | None = None

    def detector(self, image_key: str | None = None) -> DetectorDescription:
        """The detector whose image is ``image_key`` (any described detector's key),
        or the only detector.

        Raises
        ------
        BeamlineDescriptionError
            No detector has that key, or ``image_key`` is None and several are described.
        """
        if image_key is not None:
            for det in self.detectors.values():
                if det.image_key == image_key:
                    return det
            unkeyed = [d for d in self.detectors.values() if d.image_key is None]
            if len(unkeyed) == 1:
                return unkeyed[0]
            raise BeamlineDescriptionError(f"{self._where()}: no detector has image_key {image_key!r} "
                                           f"(described: {self._image_keys()})")
        if len(self.detectors) == 1:
            return next(iter(self.detectors.values()))
        raise BeamlineDescriptionError(f"{self._where()}: several detectors ({', '.join(self.detectors)}); "
                                       "the run must name its image_key")

    def run_metadata(self, detector: DetectorDescription | None = None) -> dict[str, Any]:
        """Start-document keys this description contributes to a run of ``detector``
        (the only one by default): ``detector_name``, ``image_key``, ``stage_motors`` or
        ``arm_motors``, ``monitors``, ``energy_keV`` (a fixed energy); only those it knows."""
        det = detector or self.detector()
        md: dict[str, Any] = {DETECTOR_NAME: det.name}
        if det.image_key:
            md[IMAGE_KEY] = det.image_key
        if det.motion.kind != "fixed":
            md[MOUNT_KEYS[det.motion.kind][0]] = dict(det.motion.keys)
        if self.monitors.keys():
            md[MONITORS] = self.monitors.keys()
        if self.energy_keV is not None:
            md[ENERGY_KEV] = self.energy_keV
        return start_keys(**md)

    def instrument(self, detector: DetectorDescription | None = None) -> InstrumentSettings:
        """What the analyses of a run of ``detector`` (the only one by default) need."""
        det = detector or self.detector()
        m = self.monitors
        return InstrumentSettings(detector=det.name, models=det.models, saturation_counts=det.saturation_counts,
                                  mask=det.mask, mask_file=None if det.mask_file is None else str(det.mask_file),
                                  beamstop=self.beamstop, polarization_factor=self.polarization_factor,
                                  flux_calibration=m.flux_calibration, air_transmission=m.air_transmission,
                                  dark=self.dark,
                                  frame_options={"roots": self.storage_roots, "spec_aliases": dict(self.spec_aliases)})

    def run_setup(self, start: Mapping) -> RunSetup:
        """The run that ``start`` opens, completed from this description: its detector
        (by the run's ``detector_name`` or ``image_key``), the start-document keys it
        lacks (:meth:`run_metadata`; the run's own win), instrument settings and the
        detector's nominal geometry.

        Raises
        ------
        BeamlineDescriptionError
            The run's detector is not described, or is ambiguous.
        """
        name, key = start.get(DETECTOR_NAME), start.get(IMAGE_KEY)
        if isinstance(name, str) and name in self.detectors:
            det = self.detectors[name]
        else:
            det = self.detector(key if isinstance(key, str) else None)
        return RunSetup({**self.run_metadata(det), **start}, self.instrument(det), det.nominal_model(),
                        self.energy_key, ENERGY_UNITS[self.energy_units])

    def summary(self) -> list[str]:
        """What was understood, one line per fact (``xrd-bluesky beamline check``)."""
        lines = [f"beamline {self.name!r}" + (f" ({self.source})" if self.source else "")
                 + (" [simulated]" if self.simulated else "")]
        for det in self.detectors.values():
            rows, cols = det.shape()
            lines.append(f"detector {det.name}: pyFAI {det.pyfai} {rows}x{cols} px"
                         + (f" config {det.pyfai_config}" if det.pyfai_config else "")
                         + f"; image key {det.image_key or '(the run’s only image key)'}"
                         + f"; driver models {list(det.models) or '(not checked)'}"
                         + f"; saturation {det.saturation_counts or '(from the driver)'} counts"
                         + f"; mask {det.mask_file or 'none'}")
            motion = det.motion
            if motion.kind == "stage":
                keys = ", ".join(f"{a}={motion.keys[a]}" for a in STAGE_AXES)
                ref = motion.reference
                lines.append(f"  moves on a stage ({keys}, mm); nominal geometry at "
                             f"({ref.x:g}, {ref.y:g}, {ref.distance:g}) mm")
            elif motion.kind == "arm":
                keys = ", ".join(f"{a}={k}" for a, k in motion.keys.items())
                lines.append(f"  moves on a 2theta arm in the {motion.plane} plane ({keys}; deg, mm); nominal "
                             f"geometry at reading {motion.offset_deg:g} deg, {motion.scale:g} deg per deg")
            else:
                lines.append("  fixed")
            if det.nominal is None:
                lines.append("  nominal geometry: none (runs are integrated only after a calibration)")
            else:
                p = det.nominal
                row, col = p.beam_centre_px()
                lines.append(f"  nominal geometry: dist {p.dist * 1e3:.3f} mm, poni1 {p.poni1 * 1e3:.3f} mm, "
                             f"poni2 {p.poni2 * 1e3:.3f} mm, rot {p.rot1:.4f} {p.rot2:.4f} {p.rot3:.4f} rad; "
                             f"beam centre row {row:.1f} col {col:.1f} px")
        energy = (f"{self.energy_keV:g} keV (fixed)" if self.energy_keV is not None
                  else f"data key {self.energy_key} ({self.energy_units}), unless the run records energy_keV"
                  if self.energy_key else "from each run's energy_keV")
        lines.append(f"energy: {energy}")
        m = self.monitors
        flux = (f"flux = {m.flux_calibration.slope:g} x I0 rate + {m.flux_calibration.offset:g} ph/s"
                if m.flux_calibration else "no flux calibration (no absolute scale)")
        lines.append(f"monitors: I0 {m.i0 or 'none'}, It {m.it or 'none'}; {flux}; "
                     f"air transmission {m.air_transmission:g}")
        lines.append(f"beamstop: {self.beamstop.as_dict() if self.beamstop else 'none'}")
        lines.append("polarization factor: " + ("not corrected" if self.polarization_factor is None
                                                  else f"{self.polarization_factor:g}"))
        lines.append(f"dark policy: {self.dark}")
        roots = [str(r) for r in self.storage_roots] or "none (frames are read anywhere)"
        lines.append(f"frame storage roots: {roots}")
        if self.spec_aliases:
            lines.append("spec aliases: " + ", ".join(f"{k} = {v}" for k, v in self.spec_aliases.items()))
        return lines

    def _where(self) -> str:
        return f"beamline description {self.source or self.name}"

    def _image_keys(self) -> list[str]:
        return [d.image_key for d in self.detectors.values() if d.image_key]


# -- loading and validation ------------------------------------------------------------

class _Table:
    """A TOML table being read: every key taken is checked; keys never taken are
    reported as unknown; every error names the file and the dotted key."""

    def __init__(self, data: Any, where: str, path: str):
        if not isinstance(data, Mapping):
            raise BeamlineDescriptionError(f"{where}: {path or 'the file'} is {data!r}, not a table")
        self.data, self.where, self.path = data, where, path
        self.taken: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this table (the table's own for "")."""
        return f"{self.path}.{name}" if self.path and name else self.path or name

    def error(self, name: str, message: str) -> BeamlineDescriptionError:
        """The error naming the file and the key ``name`` of this table."""
        return BeamlineDescriptionError(f"{self.where}: {self.key(name)} {message}")

    def get(self, name: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        """The value of key ``name``, checked to be of ``kind`` (a float accepts an int)."""
        self.taken.add(name)
        if name not in self.data:
            if required:
                raise self.error(name, "is missing")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds:
            kinds = (*kinds, int)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join({str: "text", float: "a number", int: "an integer", bool: "true/false",
                                 list: "a list", dict: "a table"}.get(k, k.__name__) for k in kinds
                                if not (k is int and float in kinds))
            raise self.error(name, f"= {value!r}: expected {names}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"= {value!r}: not a finite number")
        return value

    def number(self, name: str, default: float | None = None, *, required: bool = False,
               low: float = -math.inf, high: float = math.inf, unit: str = "") -> float | None:
        """A number in ``[low, high]`` (``unit`` for the message)."""
        value = self.get(name, float, default, required=required)
        if value is None:
            return None
        if not low <= value <= high:
            raise self.error(name, f"= {value!r} {unit}: must be in [{low:g}, {high:g}]".replace("  ", " "))
        return float(value)

    def table(self, name: str, *, required: bool = False) -> _Table | None:
        """The sub-table ``name`` (None if absent and not required)."""
        value = self.get(name, dict, None, required=required)
        return None if value is None else _Table(value, self.where, self.key(name))

    def file(self, name: str, base: Path) -> Path | None:
        """An existing file, relative to ``base`` unless absolute (None if absent)."""
        value = self.get(name, str)
        if value is None:
            return None
        path = (base / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise self.error(name, f"= {value!r}: no such file ({path})")
        return path

    def finish(self) -> None:
        """Refuse the first key of this table that was never read."""
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise self.error(unknown[0], f"is not a known key (known here: {', '.join(sorted(self.taken))})")


def load_beamline(path: str | Path) -> BeamlineDescription:
    """Read and validate a beamline description file.

    Raises
    ------
    BeamlineDescriptionError
        The file is missing or not TOML, or a key is unknown, missing or unusable;
        the message names the file, the key and the value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BeamlineDescriptionError(f"beamline description {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BeamlineDescriptionError(f"beamline description {path} is not valid TOML: {exc}") from None
    return parse_beamline(data, source=path.resolve())


def parse_beamline(data: Mapping, *, source: Path | None = None) -> BeamlineDescription:
    """Validate a beamline description already read from TOML (see :func:`load_beamline`);
    relative file names are resolved against ``source``'s directory."""
    where = f"beamline description {source}" if source else "beamline description"
    base = source.parent if source else Path.cwd()
    top = _Table(data, where, "")
    name = top.get("name", str, required=True)
    simulated = top.get("simulated", bool, False)
    detectors_table = top.table("detectors", required=True)
    detectors = {key: _detector(detectors_table.table(key), key, base) for key in list(detectors_table.data)}
    if not detectors:
        raise detectors_table.error("", "describes no detector: add a [detectors.NAME] table")
    keys = [d.image_key for d in detectors.values()]
    if len(detectors) > 1 and (None in keys or len(set(keys)) < len(keys)):
        raise detectors_table.error("image_key", f"= {keys}: with several detectors each needs its own image_key")
    energy = top.table("energy")
    energy_keV, energy_key, energy_units = None, None, "keV"
    if energy is not None:
        energy_keV = energy.number("keV", low=2.5, high=250.0, unit="keV")
        energy_key = energy.get("key", str)
        energy_units = energy.get("units", str, "keV")
        if (energy_keV is None) == (energy_key is None):
            raise energy.error("", "needs exactly one of keV (a fixed energy) or key (the energy's data key)")
        if energy_units not in ENERGY_UNITS or energy_keV is not None and "units" in energy.data:
            raise energy.error("units", f"= {energy_units!r}: with key, one of {', '.join(ENERGY_UNITS)}")
        energy.finish()
    monitors = _monitors(top.table("monitors"))
    beamstop = _beamstop(top.table("beamstop"))
    corrections = top.table("corrections", required=True)
    polarization = corrections.get("polarization_factor", (float, str), required=True)
    if isinstance(polarization, str):
        if polarization != "none":
            raise corrections.error("polarization_factor", f"= {polarization!r}: a number in [-1, 1] or \"none\"")
        polarization = None
    elif not -1 <= polarization <= 1:
        raise corrections.error("polarization_factor", f"= {polarization!r}: must be in [-1, 1] "
                                "(0.99 for a horizontally polarised synchrotron beam)")
    dark = corrections.get("dark", str, "if_present")
    if dark not in DARK_POLICIES:
        raise corrections.error("dark", f"= {dark!r}: one of {', '.join(DARK_POLICIES)}")
    corrections.finish()
    frames = top.table("frames")
    roots: tuple[Path, ...] = ()
    aliases: dict[str, str] = {}
    if frames is not None:
        roots_list = frames.get("storage_roots", list, [])
        for i, root in enumerate(roots_list):
            if not isinstance(root, str) or not root:
                raise frames.error("storage_roots", f"[{i}] = {root!r}: expected a directory")
        roots = tuple((base / Path(r).expanduser()).resolve() for r in roots_list)
        alias_table = frames.table("spec_aliases")
        if alias_table is not None:
            for alias in list(alias_table.data):
                target = alias_table.get(alias, str)
                if target not in HANDLERS:
                    raise alias_table.error(alias, f"= {target!r}: not a known spec ({', '.join(HANDLERS)})")
                aliases[alias] = target
        frames.finish()
    top.finish()
    return BeamlineDescription(name, detectors, energy_keV, energy_key, energy_units, monitors, beamstop,
                               polarization, dark, roots, aliases, simulated, source)


def _detector(table: _Table, name: str, base: Path) -> DetectorDescription:
    pyfai_name = table.get("pyfai", str)
    nexus = table.file("nexus_file", base)
    pixel = table.get("pixel_size_m", list)
    shape = table.get("shape", list)
    orientation = table.get("orientation", int)
    config: dict[str, Any] = {}
    if nexus is not None:
        if pyfai_name or pixel or shape:
            raise table.error("nexus_file", "excludes pyfai, pixel_size_m and shape")
        pyfai_name, config = "NexusDetector", {"filename": str(nexus)}
    elif pixel is not None or shape is not None:
        if pyfai_name or pixel is None or shape is None:
            raise table.error("pixel_size_m", "and shape go together, without pyfai")
        if len(pixel) != 2 or len(shape) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in pixel) \
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise table.error("pixel_size_m", f"= {pixel!r}, shape = {shape!r}: two pixel sizes (m, rows then "
                              "columns) and two whole numbers (rows, columns)")
        pyfai_name, config = "Detector", {"pixel1": float(pixel[0]), "pixel2": float(pixel[1]), "max_shape": shape}
    elif pyfai_name is None:
        raise table.error("pyfai", "is missing (or give nexus_file, or pixel_size_m and shape)")
    if orientation is not None:
        if not 1 <= orientation <= 4:
            raise table.error("orientation", f"= {orientation!r}: pyFAI orientation 1-4")
        config["orientation"] = orientation
    config_json = json.dumps(config, sort_keys=True) if config else ""
    try:
        det = detector_model(pyfai_name, config_json)
    except GeometryError as exc:
        raise table.error("pyfai", f"= {pyfai_name!r}: {exc}") from None
    if det.shape is None:
        raise table.error("pyfai", f"= {pyfai_name!r}: pyFAI gives it no shape; give pixel_size_m and shape")
    image_key = table.get("image_key", str)
    models = table.get("models", list, [])
    if not all(isinstance(m, str) and m for m in models):
        raise table.error("models", f"= {models!r}: expected a list of driver model strings")
    saturation = table.get("saturation_counts", int)
    if saturation is not None and saturation < 1:
        raise table.error("saturation_counts", f"= {saturation!r}: must be >= 1 count")
    mask_file = table.file("mask", base)
    motion = _motion(table.table("motion"))
    nominal = _nominal(table.table("nominal"), pyfai_name, config_json, base)
    table.finish()
    detector = DetectorDescription(name, pyfai_name, config_json, image_key, tuple(models), saturation, mask_file,
                                   motion, nominal)
    _ = detector.mask  # read now: a bad file is said at load time
    return detector


def _motion(table: _Table | None) -> DetectorMotion:
    if table is None:
        return DetectorMotion()
    kind = table.get("kind", str, required=True)
    if kind not in MOTION_KINDS:
        raise table.error("kind", f"= {kind!r}: one of {', '.join(MOTION_KINDS)}")
    if kind == "fixed":
        table.finish()
        return DetectorMotion()
    if kind == "arm":
        return _arm_motion(table)
    keys = {axis: table.get(axis, str, required=True) for axis in STAGE_AXES}
    reference = table.get("reference_mm", list, [0.0, 0.0, 0.0])
    if len(reference) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) for v in reference):
        raise table.error("reference_mm", f"= {reference!r}: the stage position (x, y, distance, mm) at which "
                          "the nominal geometry holds")
    table.finish()
    return DetectorMotion("stage", keys, StagePosition(*(float(v) for v in reference)))


def _arm_motion(table: _Table) -> DetectorMotion:
    keys = {"angle": table.get("angle", str, required=True)}
    translation = table.get("translation", str)
    if translation is not None:
        keys["translation"] = translation
    plane = table.get("plane", str, "vertical")
    if plane not in ARM_PLANES:
        raise table.error("plane", f"= {plane!r}: one of {', '.join(ARM_PLANES)}")
    offset = table.number("offset_deg", 0.0, low=-360.0, high=360.0, unit="deg")
    scale = table.number("scale", 1.0, low=-2.0, high=2.0, unit="deg per deg")
    if abs(scale) < 0.5:
        raise table.error("scale", f"= {scale!r}: the arm turns about 1 deg per deg of its reading (sign: direction)")
    table.finish()
    return DetectorMotion("arm", keys, plane=plane, offset_deg=offset, scale=scale)


def _nominal(table: _Table | None, detector: str, config: str, base: Path) -> Poni | None:
    if table is None:
        return None
    poni_file = table.file("poni", base)
    if poni_file is not None:
        table.finish()
        try:
            poni = Poni.read(poni_file)
        except GeometryError as exc:
            raise table.error("poni", f"= {str(poni_file)!r}: {exc}") from None
        return replace(poni, detector=detector, detector_config=config)
    values = {"dist": table.number("distance_m", required=True, low=1e-3, high=100.0, unit="m"),
              "poni1": table.number("poni1_m", required=True, low=-10.0, high=10.0, unit="m"),
              "poni2": table.number("poni2_m", required=True, low=-10.0, high=10.0, unit="m"),
              **{f"rot{i}": table.number(f"rot{i}_rad", 0.0, low=-math.pi, high=math.pi, unit="rad")
                 for i in (1, 2, 3)}}
    table.finish()
    try:
        return Poni(**values, wavelength=1e-10, detector=detector, detector_config=config)
    except GeometryError as exc:
        raise table.error("", f"is not a usable geometry: {exc}") from None


def _monitors(table: _Table | None) -> MonitorsDescription:
    if table is None:
        return MonitorsDescription()
    i0, it = table.get("i0", str), table.get("it", str)
    slope = table.number("flux_slope", unit="ph/s per count/s")
    offset = table.number("flux_offset_ph_s", 0.0, unit="ph/s")
    air = table.number("air_transmission", 1.0, low=1e-3, high=1.0)
    table.finish()
    if i0 and slope is None:
        raise table.error("flux_slope", "is missing: I0 needs its counts-to-flux calibration "
                          "(flux = flux_slope x I0 rate + flux_offset_ph_s)")
    if slope is not None and slope <= 0:
        raise table.error("flux_slope", f"= {slope!r}: must be > 0")
    return MonitorsDescription(i0, it, None if slope is None else FluxCalibration(slope, offset), air)


def _beamstop(table: _Table | None) -> Beamstop | None:
    if table is None:
        return None
    values = {"radius_mm": table.number("radius_mm", required=True, low=1e-3, high=1e3, unit="mm"),
              "arm_width_mm": table.number("arm_width_mm", 0.0, low=0.0, high=1e3, unit="mm"),
              "arm_azimuth_deg": table.number("arm_azimuth_deg", 0.0, low=-360.0, high=360.0, unit="deg"),
              "distance_mm": table.number("distance_mm", required=True, low=1e-3, high=1e5, unit="mm")}
    table.finish()
    return Beamstop(**values)


#: A commented description (``xrd-bluesky beamline --example``); it loads as it is.
EXAMPLE = '''\
# xrd-bluesky beamline description: what the hardware is. Check it with
#   xrd-bluesky beamline check THIS_FILE
# Lengths in m (geometry) or mm (motors, beamstop), angles in rad (geometry) or deg,
# energy in keV. Relative file names are relative to this file.
name = "my-beamline"

# One table per area detector; several need an image_key each.
[detectors.pilatus]
pyfai = "Pilatus1M"                  # a pyFAI detector name ...
# pixel_size_m = [172e-6, 172e-6]    # ... or pixel sizes and shape, without pyfai
# shape = [1043, 981]
# nexus_file = "detector.h5"         # ... or a NeXus detector file
# orientation = 3                    # pyFAI orientation 1-4 (default: the detector's)
image_key = "pilatus_image"          # data key of the image (omit: the run's only image)
models = ["Pilatus"]                 # driver model strings meaning this detector (omit: not checked)
saturation_counts = 1048575          # counter depth (omit: the driver's max_count, if any)
# mask = "mask.edf"                  # static mask, any fabio format, non-zero = bad

[detectors.pilatus.motion]
kind = "stage"                       # "fixed", "stage" (a translation stage) or "arm" (a 2theta arm)
x = "det_x"                          # data keys of the stage motors (mm)
y = "det_y"
distance = "det_z"
reference_mm = [0.0, 0.0, 200.0]     # stage position at which the nominal geometry holds
# A detector on a 2theta arm instead (rotation about an axis through the sample):
# kind = "arm"
# angle = "tth"                      # data key of the arm angle (deg)
# translation = "det_z"              # optional: a translation the arm carries, along the detector normal (mm)
# plane = "vertical"                 # the arm turns the detector up ("vertical") or sideways ("horizontal")
# offset_deg = 0.0                   # arm reading at which the nominal geometry holds (refined by calibration)
# scale = 1.0                        # degrees turned per degree of reading; -1 if it turns the other way

# Nominal geometry: used before any calibration (labelled "nominal") and where
# calibrations start from. Either a PONI file ...
[detectors.pilatus.nominal]
# poni = "nominal.poni"
distance_m = 0.200                   # ... or pyFAI's values
poni1_m = 0.0897
poni2_m = 0.0843
rot1_rad = 0.0
rot2_rad = 0.0
rot3_rad = 0.0

[energy]                             # for runs that do not record energy_keV:
keV = 17.0                           # a fixed energy, or
# key = "mono_energy"                # the data key of the energy, read in the run
# units = "keV"                      # of that key: "keV" or "eV"

[monitors]
i0 = "I0"                            # data keys of the ion chambers (counts)
it = "It"
flux_slope = 62500.0                 # flux (ph/s) = flux_slope x I0 rate (counts/s) + flux_offset_ph_s
flux_offset_ph_s = -12800000.0
air_transmission = 0.868             # between the I0 and It chambers, no sample

# [beamstop]                         # omit when there is none to mask
# radius_mm = 1.5
# arm_width_mm = 0.8
# arm_azimuth_deg = 0.0              # pyFAI chi of the holding arm
# distance_mm = 150.0                # downstream of the sample

[corrections]
polarization_factor = 0.99           # pyFAI's factor, or "none"
dark = "if_present"                  # "if_present", "required" or "none"

[frames]
storage_roots = ["/tmp"]             # frame files may be read only from here
[frames.spec_aliases]
AD_HDF5_Pilatus_6idb = "AD_HDF5_SINGLE"
'''
