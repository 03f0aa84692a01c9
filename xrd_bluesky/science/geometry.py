"""Detector geometry: pyFAI detector models, validated PONI geometries and the
detector-position model that maps stage motor positions to a geometry.

Stage convention (written down once, used by the simulator, the calibration and the
integration alike): the detector stage's axes are parallel to the detector's own
axes. Moving the stage by ``+dx`` mm moves the detector towards increasing column
index (pyFAI dim2), so the PONI, fixed in the laboratory, is found ``dx`` closer to
the detector origin: ``poni2 = poni2_ref - dx``; likewise ``y`` with dim1 and
``poni1``; the ``distance`` motor moves along the detector normal:
``dist = dist_ref + d_distance``. Rotations do not change with translations.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyFAI.detectors
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from ..errors import GeometryError

#: Accepted wavelength range in Angstrom (0.05-5 A: 2.5-250 keV).
WAVELENGTH_RANGE_A = (0.05, 5.0)
#: Accepted sample-detector distance in m (1 mm to 100 m).
DISTANCE_RANGE_M = (1e-3, 100.0)
#: Largest accepted distance of the PONI from the detector origin, in m.
MAX_PONI_M = 100.0
#: Largest accepted distance of the PONI from the detector's centre, in detector sizes
#: (its diagonal): a PONI written in mm and read as m lies hundreds of sizes away.
MAX_PONI_DETECTOR_SIZES = 10.0
#: Accepted pixel size in m (10 nm to 1 m).
PIXEL_RANGE_M = (1e-8, 1.0)
#: Keys a PONI file must hold (pyFAI's spelling; pyFAI silently defaults absent ones).
PONI_FILE_KEYS = ("Distance", "Poni1", "Poni2", "Rot1", "Rot2", "Rot3", "Wavelength")


@lru_cache(maxsize=8)
def detector_model(name: str, config: str = "") -> pyFAI.detectors.Detector:
    """Return the pyFAI detector model called ``name`` (e.g. ``"Pilatus2MCdTe"``),
    configured by ``config`` (pyFAI's detector configuration as JSON) when given.

    Raises
    ------
    GeometryError
        When pyFAI does not know the name or rejects the configuration.
    """
    quiet = logging.getLogger("pyFAI.detectors")  # it logs every known name before raising: the error says it
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return pyFAI.detectors.detector_factory(name, json.loads(config) if config else None)
    except Exception as exc:  # pyFAI raises many types on unknown names and bad configurations
        raise GeometryError(f"unknown detector model {name!r} (config {config!r}): {_first_line(exc)}") from exc
    finally:
        quiet.setLevel(level)


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message (pyFAI appends long listings)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Poni:
    """A pyFAI geometry: lengths in metres, angles in radians, wavelength in metres."""

    dist: float
    poni1: float
    poni2: float
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    wavelength: float = 1e-10
    detector: str = "Pilatus2MCdTe"
    detector_config: str = ""

    def __post_init__(self) -> None:
        validate_poni(self)

    def integrator(self) -> AzimuthalIntegrator:
        """A pyFAI ``AzimuthalIntegrator`` for this geometry (cached per geometry)."""
        return _integrator(self)

    def as_dict(self) -> dict:
        """Plain dict of the parameters (JSON-serialisable)."""
        return asdict(self)

    def beam_centre_px(self) -> tuple[float, float]:
        """Direct-beam position (row, column) in pixels, via pyFAI's Fit2D view."""
        fit2d = self.fit2d()
        return fit2d["centerY"], fit2d["centerX"]

    def write(self, path: str | Path) -> Path:
        """Write a pyFAI PONI file and return its path."""
        path = Path(path)
        ai = self.integrator()
        if path.exists():
            path.unlink()
        ai.save(str(path))
        return path

    @classmethod
    def read(cls, path: str | Path) -> Poni:
        """Read a pyFAI PONI file; the detector is stored by its pyFAI name.

        Raises
        ------
        GeometryError
            Naming the file: it is missing or unreadable, lacks one of
            :data:`PONI_FILE_KEYS`, or holds a non-physical geometry (the parameter
            and value are named).
        """
        path = Path(path)
        if not path.is_file():
            raise GeometryError(f"PONI file not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            ai = pyFAI.load(str(path))
        except Exception as exc:  # pyFAI raises many types on bad files
            raise GeometryError(f"cannot read PONI file {path}: {_first_line(exc)}") from exc
        keys = {line.split(":", 1)[0].strip().lower() for line in lines
                if ":" in line and not line.lstrip().startswith("#")}
        missing = [key for key in PONI_FILE_KEYS if key.lower() not in keys]
        if missing:
            raise GeometryError(f"PONI file {path} has no {', '.join(missing)} (pyFAI would assume a default)")
        return cls.from_integrator(ai, source=f"PONI file {path}")

    @classmethod
    def from_fit2d(cls, direct_distance_mm: float, centre_x_px: float, centre_y_px: float, *,
                   tilt_deg: float = 0.0, tilt_plane_deg: float = 0.0, wavelength: float,
                   detector: str, detector_config: str = "") -> Poni:
        """Build from Fit2D-style parameters: direct-beam distance (mm), beam centre
        (column x, row y, pixels), tilt and tilt-plane rotation (deg), wavelength (m)."""
        from pyFAI.geometry import Geometry

        geo = Geometry(detector=detector_model(detector, detector_config), wavelength=wavelength)
        geo.setFit2D(direct_distance_mm, centre_x_px, centre_y_px, tilt=tilt_deg, tiltPlanRotation=tilt_plane_deg)
        return replace(cls.from_integrator(geo), detector=detector, detector_config=detector_config)

    def fit2d(self) -> dict:
        """Fit2D-style view: ``directDist`` (mm), ``centerX``/``centerY`` (px), ``tilt``,
        ``tiltPlanRotation`` (deg)."""
        return self.integrator().getFit2D()

    @classmethod
    def from_integrator(cls, ai, source: str = "pyFAI geometry") -> Poni:
        """Build from a pyFAI geometry object (``Geometry`` or ``AzimuthalIntegrator``).

        Raises
        ------
        GeometryError
            When the geometry is non-physical; the message starts with ``source``.
        """
        try:
            if ai.wavelength is None:
                raise GeometryError("no wavelength")
            name, config = _detector_identity(ai.detector)
            return cls(
                dist=float(ai.dist), poni1=float(ai.poni1), poni2=float(ai.poni2),
                rot1=float(ai.rot1), rot2=float(ai.rot2), rot3=float(ai.rot3),
                wavelength=float(ai.wavelength), detector=name, detector_config=config,
            )
        except GeometryError as exc:
            raise GeometryError(f"{source}: {exc}") from exc

    def detector_model(self) -> pyFAI.detectors.Detector:
        """The pyFAI detector of this geometry."""
        return detector_model(self.detector, self.detector_config)

    def with_detector(self, name: str | None = None, shape: tuple[int, int] | None = None) -> Poni:
        """This geometry on the pyFAI detector model ``name`` (whose pixel sizes must be
        this geometry's), or with the detector shape ``shape`` (rows, columns) given to a
        detector that declares none (version-1 PONIs, Dioptas' generic detector).

        Raises
        ------
        GeometryError
            Unknown model, pixel sizes that differ from the PONI's by more than 0.1 %,
            or a shape that contradicts the one the detector declares.
        """
        current = self.detector_model()
        if name is not None:
            model = detector_model(name)
            if not all(math.isclose(a, b, rel_tol=1e-3) for a, b in
                       ((model.pixel1, current.pixel1), (model.pixel2, current.pixel2))):
                raise GeometryError(f"detector {name!r} has pixels of {model.pixel1 * 1e6:.4g} x "
                                    f"{model.pixel2 * 1e6:.4g} um, the PONI's {self.detector!r} "
                                    f"{current.pixel1 * 1e6:.4g} x {current.pixel2 * 1e6:.4g} um")
            result = replace(self, detector=name, detector_config="")
            if shape is None:
                return result
            return result.with_detector(shape=shape)
        if shape is None:
            return self
        shape = tuple(int(n) for n in shape)
        if current.shape is not None:
            if tuple(current.shape) != shape:
                raise GeometryError(f"detector {self.detector!r} has shape {tuple(current.shape)}, not {shape}")
            return self
        config = current.get_config()
        config["max_shape"] = list(shape)
        return replace(self, detector_config=json.dumps(config, sort_keys=True))


def two_theta_difference_deg(a: Poni, b: Poni) -> float:
    """Largest difference (deg) of a pixel centre's 2theta between two geometries of the
    same detector: what a calibration determines even where parameters trade against
    each other (a detector on a 2theta arm: the PONI along the arm's motion against the
    arm's zero, a tilt against the PONI across it).

    Raises
    ------
    GeometryError
        The geometries are of detectors of different shapes.
    """
    maps = [poni.integrator().center_array(unit="2th_deg") for poni in (a, b)]
    if maps[0].shape != maps[1].shape:
        raise GeometryError(f"geometries of detectors {a.detector!r} and {b.detector!r} differ in shape")
    return float(np.max(np.abs(maps[0] - maps[1])))


def _detector_identity(det) -> tuple[str, str]:
    """(name, JSON configuration) under which ``detector_factory`` rebuilds ``det``;
    the configuration is empty when the name alone does."""
    name = type(det).__name__
    config = det.get_config()
    if pyFAI.detectors.detector_factory(name).get_config() == config:
        return name, ""
    return name, json.dumps(config, sort_keys=True)


#: Integrators hold large per-pixel arrays and sparse matrices: keep a few.
@lru_cache(maxsize=6)
def _integrator(poni: Poni) -> AzimuthalIntegrator:
    return AzimuthalIntegrator(
        dist=poni.dist, poni1=poni.poni1, poni2=poni.poni2,
        rot1=poni.rot1, rot2=poni.rot2, rot3=poni.rot3,
        wavelength=poni.wavelength, detector=poni.detector_model(),
    )


def validate_poni(poni: Poni) -> None:
    """Raise :class:`GeometryError` naming the parameter and its value when ``poni`` is
    non-physical: a length or angle that is not a finite number, a rotation beyond
    +-2 pi rad (an angle in degrees), a distance outside
    :data:`DISTANCE_RANGE_M`, a PONI beyond :data:`MAX_PONI_M`, a wavelength outside
    :data:`WAVELENGTH_RANGE_A`, an unknown detector, a detector shape without rows or
    columns, or a pixel size outside :data:`PIXEL_RANGE_M` (in particular <= 0)."""
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        value = getattr(poni, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GeometryError(f"geometry parameter {key}={value!r} is not a finite number")
    for key in ("rot1", "rot2", "rot3"):
        if abs(getattr(poni, key)) > 2 * math.pi:
            raise GeometryError(f"geometry parameter {key}={getattr(poni, key)!r} rad is beyond +-2 pi: "
                                "an angle in degrees?")
    if not DISTANCE_RANGE_M[0] <= poni.dist <= DISTANCE_RANGE_M[1]:
        hint = ": are the PONI's lengths in mm rather than m?" if poni.dist > DISTANCE_RANGE_M[1] else " (must be > 0)"
        raise GeometryError(f"sample-detector distance dist={poni.dist!r} m is outside "
                            f"{DISTANCE_RANGE_M[0]:g}-{DISTANCE_RANGE_M[1]:g} m{hint}")
    for key in ("poni1", "poni2"):
        if abs(getattr(poni, key)) > MAX_PONI_M:
            raise GeometryError(f"geometry parameter {key}={getattr(poni, key)!r} m is beyond +-{MAX_PONI_M:g} m")
    wl_a = poni.wavelength * 1e10
    if not WAVELENGTH_RANGE_A[0] <= wl_a <= WAVELENGTH_RANGE_A[1]:
        raise GeometryError(f"wavelength={poni.wavelength!r} m ({wl_a:.4g} A) is outside "
                            f"{WAVELENGTH_RANGE_A[0]}-{WAVELENGTH_RANGE_A[1]} A")
    for key in ("detector", "detector_config"):
        if not isinstance(getattr(poni, key), str):
            raise GeometryError(f"geometry parameter {key}={getattr(poni, key)!r} is not a string")
    det = poni.detector_model()
    if det.shape is not None and not all(isinstance(n, numbers.Integral) and n >= 1 for n in det.shape):
        raise GeometryError(f"detector {poni.detector!r} (config {poni.detector_config!r}) has shape "
                            f"{tuple(det.shape)}; it needs a whole number >= 1 of rows and of columns")
    pixels = {"pixel1": det.pixel1, "pixel2": det.pixel2}
    low, high = PIXEL_RANGE_M
    if not all(isinstance(v, numbers.Real) and low <= v <= high for v in pixels.values()):
        sizes = ", ".join(f"{k}={v!r} m" for k, v in pixels.items())
        raise GeometryError(f"detector {poni.detector!r} (config {poni.detector_config!r}) has pixel size "
                            f"{sizes}; each must be in {low:g}-{high:g} m (> 0)")
    if det.shape is not None:
        _check_poni_near_detector(poni, det)


def _check_poni_near_detector(poni: Poni, det: pyFAI.detectors.Detector) -> None:
    """Raise :class:`GeometryError` when the PONI lies more than
    :data:`MAX_PONI_DETECTOR_SIZES` detector diagonals from the detector's centre: the
    lengths are in another unit (mm read as m) or belong to another detector."""
    height, width = det.shape[0] * det.pixel1, det.shape[1] * det.pixel2
    diagonal = math.hypot(height, width)
    offset = math.hypot(poni.poni1 - height / 2, poni.poni2 - width / 2)
    if offset > MAX_PONI_DETECTOR_SIZES * diagonal:
        raise GeometryError(
            f"PONI (poni1={poni.poni1:.6g} m, poni2={poni.poni2:.6g} m) lies {offset:.3g} m from the centre of "
            f"detector {poni.detector!r} ({height:.3g} x {width:.3g} m), more than {MAX_PONI_DETECTOR_SIZES:g} "
            "detector sizes: are the PONI's lengths in mm rather than m?")


#: Axes of a detector stage, in :class:`StagePosition`'s order.
STAGE_AXES = ("x", "y", "distance")


@dataclass(frozen=True)
class StagePosition:
    """Detector-stage motor positions in mm."""

    x: float
    y: float
    distance: float

    def as_dict(self) -> dict[str, float]:
        return {"x": self.x, "y": self.y, "distance": self.distance}


@dataclass(frozen=True)
class DetectorPositionModel:
    """Geometry as a function of the detector-stage position.

    ``reference`` is the geometry when the stage is at ``reference_position``; any
    other position follows from the stage convention of this module.
    """

    reference: Poni
    reference_position: StagePosition

    #: What a position of this model is, and its axes (mm).
    position_type: ClassVar[type] = StagePosition
    axes: ClassVar[tuple[str, ...]] = STAGE_AXES

    def outside_calibrated_range(self, position: StagePosition) -> str | None:
        """None: a stage's translations move the geometry exactly, wherever the stage is."""
        return None

    def poni_at(self, position: StagePosition) -> Poni:
        """The geometry (PONI) at a stage position (mm)."""
        ref, pos0 = self.reference, self.reference_position
        return replace(
            ref,
            poni1=ref.poni1 - (position.y - pos0.y) * 1e-3,
            poni2=ref.poni2 - (position.x - pos0.x) * 1e-3,
            dist=ref.dist + (position.distance - pos0.distance) * 1e-3,
        )

    def with_wavelength(self, wavelength_m: float) -> DetectorPositionModel:
        """The same model at another wavelength (m)."""
        return replace(self, reference=replace(self.reference, wavelength=wavelength_m))

    def as_dict(self) -> dict:
        return {"reference": self.reference.as_dict(),
                "reference_position": self.reference_position.as_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> DetectorPositionModel:
        return cls(Poni(**data["reference"]), StagePosition(**data["reference_position"]))
