"""Detector-position models beyond the translation stage: a detector on a 2theta arm, and
pyFAI goniometer files (read and written) for every model.

Arm convention (written down once, used by the simulator, the calibration and the
integration alike): the arm rotates the detector about an axis through the sample, and
the rotation is pyFAI's own detector rotation. pyFAI applies ``rot1``, then ``rot2``,
then ``rot3`` (about the beam) to the detector, each about a laboratory axis, so

* a ``"vertical"`` arm (the detector moves up and down, rings move along the rows,
  dim1) adds to ``rot2``: ``rot2 = rot2_ref + radians(scale * (angle - offset_deg))``;
* a ``"horizontal"`` arm (the detector moves sideways, rings move along the columns,
  dim2) adds to ``rot1``: ``rot1 = rot1_ref + radians(scale * (angle - offset_deg))``;
* a translation carried by the arm, along the detector normal, adds to the distance:
  ``dist = dist_ref + 1e-3 * translation`` (mm).

Signs, as pyFAI computes them: with ``rot2 > 0`` the direct beam meets the detector
plane at increasing row index beyond the PONI, and the 2theta of the pixels grows
towards *decreasing* row index; with ``rot1 > 0`` it grows towards *increasing*
column index. A pixel at the PONI sees 2theta = |rotation|. So with ``scale > 0`` an
increasing arm reading (beyond ``offset_deg``) moves every pixel to higher 2theta once
the rotation exceeds the detector's half-height (width for a horizontal arm); an arm
that turns the other way has ``scale < 0``.

Degeneracy: the arm's rotation and the reference's own rotation about the same axis
are one parameter (``rot2_ref`` and ``offset_deg`` for a vertical arm, ``rot1_ref``
and ``offset_deg`` for a horizontal one), so a model is refined with ``rot2_ref = 0``
(``rot1_ref = 0``). The PONI coordinate along the arm's motion (``poni1`` for a
vertical arm) is nearly degenerate with ``offset_deg``: a shift ``dp`` of the PONI
moves the rings like a rotation ``dp / dist`` up to a tilt of the detector about its
own centre, which changes 2theta by only ``~ dp h^2 / dist^3`` at a height ``h`` from
the PONI (see :mod:`~xrd_bluesky.science.calibration.arm` for how the fit handles it).

pyFAI's goniometer JSON (``Goniometer.sload``/``save``) carries the model as a
``GeometryTransformation`` (numexpr expressions); :func:`write_goniometer_json` writes
ours, and :func:`read_goniometer_json` reads any pyFAI goniometer file, recognising our
expressions. What pyFAI's format has no place for (the arm's calibrated range, the
kind of model) is kept under the top-level key :data:`EXTRA_KEY`, which pyFAI ignores.
"""

from __future__ import annotations

import copy
import json
import math
from collections import namedtuple
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import pyFAI.goniometer
from pyFAI.goniometer import GeometryTransformation, Goniometer

from ...compat.pyfai import goniometer_detector, goniometer_file_versions
from ...errors import GeometryError, OutputError
from ..geometry import DetectorPositionModel, Poni, StagePosition

#: Planes in which an arm can rotate the detector (see the module's convention).
ARM_PLANES = ("vertical", "horizontal")
#: Axes of an arm, in :class:`ArmPosition`'s order (``translation`` only when the arm carries one).
ARM_AXES = ("angle", "translation")
#: pyFAI rotation the arm adds to, per plane.
ARM_ROTATION = {"vertical": "rot2", "horizontal": "rot1"}
#: pyFAI's geometry parameters, in a goniometer transformation's order.
PONI_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")
#: Parameters of an arm model in its pyFAI transformation.
ARM_PARAMETERS = tuple(f"{p}_ref" for p in PONI_PARAMETERS) + ("offset_deg", "scale")
#: Parameters and axes (mm) of the stage model in its pyFAI transformation.
STAGE_PARAMETERS = tuple(f"{p}_0" for p in PONI_PARAMETERS)
STAGE_POS_NAMES = ("x", "y", "distance")
#: Top-level key of our additions to pyFAI's goniometer JSON (pyFAI's reader ignores it).
EXTRA_KEY = "xrd_bluesky"


@dataclass(frozen=True)
class ArmPosition:
    """Readings of a detector arm: ``angle`` (deg) and, when the arm carries one, the
    translation along the detector normal (mm; 0 without one)."""

    angle: float
    translation: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"angle": self.angle, "translation": self.translation}


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GeometryError(f"arm model parameter {name}={value!r} is not a finite number")
    return float(value)


@dataclass(frozen=True)
class ArmModel:
    """Geometry as a function of the readings of a 2theta arm (module convention).

    Attributes
    ----------
    reference : Poni
        The geometry when the arm's rotation is zero (and the translation 0 mm).
    plane : str
        ``"vertical"`` (rotation about the lab's horizontal axis: pyFAI ``rot2``) or
        ``"horizontal"`` (about the vertical axis: ``rot1``).
    offset_deg : float
        Arm reading (deg) at which the arm's rotation is zero.
    scale : float
        Rotation (deg) per degree of reading; its sign is the direction.
    carries_translation : bool
        Whether a translation (mm, along the detector normal) rides on the arm.
    calibrated_range_deg : (float, float) or None
        Arm readings (deg) the calibration covered.
    """

    reference: Poni
    plane: str = "vertical"
    offset_deg: float = 0.0
    scale: float = 1.0
    carries_translation: bool = False
    calibrated_range_deg: tuple[float, float] | None = field(default=None)

    position_type: ClassVar[type] = ArmPosition

    def __post_init__(self) -> None:
        if self.plane not in ARM_PLANES:
            raise GeometryError(f"arm plane {self.plane!r} is not one of {ARM_PLANES}")
        _finite("offset_deg", self.offset_deg)
        if _finite("scale", self.scale) == 0:
            raise GeometryError("arm model parameter scale=0: the arm would not rotate the detector")
        if self.calibrated_range_deg is not None:
            low, high = (_finite("calibrated_range_deg", v) for v in self.calibrated_range_deg)
            if low > high:
                raise GeometryError(f"arm calibrated range {self.calibrated_range_deg!r} deg runs backwards")
            object.__setattr__(self, "calibrated_range_deg", (low, high))

    @property
    def kind(self) -> str:
        return "arm_translation" if self.carries_translation else "arm"

    @property
    def axes(self) -> tuple[str, ...]:
        return ARM_AXES if self.carries_translation else ARM_AXES[:1]

    @property
    def reference_position(self) -> ArmPosition:
        return ArmPosition(self.offset_deg, 0.0)

    @property
    def rotation_name(self) -> str:
        """The pyFAI rotation the arm adds to (``"rot2"`` or ``"rot1"``)."""
        return ARM_ROTATION[self.plane]

    def rotation_rad(self, angle: float) -> float:
        """The arm's rotation (rad) at the reading ``angle`` (deg)."""
        return math.radians(self.scale * (_finite("arm angle", angle) - self.offset_deg))

    def poni_at(self, position: ArmPosition) -> Poni:
        """The geometry at arm readings ``position`` (deg, mm).

        Raises
        ------
        GeometryError
            A non-finite reading, a translation on an arm that carries none, or a
            geometry that is non-physical there.
        """
        translation = _finite("arm translation", position.translation)
        if translation and not self.carries_translation:
            raise GeometryError(f"arm position {position} has a translation of {translation} mm but the arm "
                                "carries none")
        ref, rot = self.reference, self.rotation_name
        return replace(ref, dist=ref.dist + 1e-3 * translation,
                       **{rot: getattr(ref, rot) + self.rotation_rad(position.angle)})

    def with_wavelength(self, wavelength_m: float) -> ArmModel:
        """The same model at another wavelength (m)."""
        return replace(self, reference=replace(self.reference, wavelength=wavelength_m))

    def outside_calibrated_range(self, position: ArmPosition) -> str | None:
        """A message naming the arm angle and the calibrated range when ``position`` lies
        outside it, else None (also None when no range is known)."""
        if self.calibrated_range_deg is None:
            return None
        low, high = self.calibrated_range_deg
        if low <= position.angle <= high:
            return None
        return (f"arm angle {position.angle:g} deg is outside the calibrated range {low:g}-{high:g} deg: "
                "the geometry there is extrapolated")

    def transformation(self) -> GeometryTransformation:
        """The model in pyFAI's terms: parameters :data:`ARM_PARAMETERS` (m, rad, deg,
        1) and axes :attr:`axes` (deg, mm)."""
        rot = self.rotation_name
        expressions = {f"{p}_expr": f"{p}_ref" for p in PONI_PARAMETERS}
        expressions[f"{rot}_expr"] = f"{rot}_ref + pi / 180 * scale * (angle - offset_deg)"
        if self.carries_translation:
            expressions["dist_expr"] = "dist_ref + 0.001 * translation"
        return GeometryTransformation(param_names=list(ARM_PARAMETERS), pos_names=list(self.axes), **expressions)

    def parameters(self) -> list[float]:
        """Values of :data:`ARM_PARAMETERS`."""
        return [getattr(self.reference, p) for p in PONI_PARAMETERS] + [self.offset_deg, self.scale]

    def goniometer(self) -> Goniometer:
        """A pyFAI ``Goniometer`` of this model (positions: the values of :attr:`axes`)."""
        return Goniometer(self.parameters(), self.transformation(), detector=self.reference.detector_model(),
                          wavelength=self.reference.wavelength)

    def as_dict(self) -> dict:
        """Plain dict of the model (JSON-serialisable), with its ``kind``."""
        return {"kind": self.kind, "reference": self.reference.as_dict(), "plane": self.plane,
                "offset_deg": self.offset_deg, "scale": self.scale, "carries_translation": self.carries_translation,
                "calibrated_range_deg": None if self.calibrated_range_deg is None else list(self.calibrated_range_deg)}

    @classmethod
    def from_dict(cls, data: dict) -> ArmModel:
        """Inverse of :meth:`as_dict`.

        Raises
        ------
        GeometryError
            A kind that is not an arm's, or that contradicts ``carries_translation``.
        """
        kind = data.get("kind", "arm")
        carries = bool(data.get("carries_translation", kind == "arm_translation"))
        if kind not in ("arm", "arm_translation") or (kind == "arm_translation") != carries:
            raise GeometryError(f"position model of kind {kind!r} (carries_translation={carries}) is not an arm model")
        rng = data.get("calibrated_range_deg")
        return cls(Poni(**data["reference"]), plane=data.get("plane", "vertical"),
                   offset_deg=data.get("offset_deg", 0.0), scale=data.get("scale", 1.0), carries_translation=carries,
                   calibrated_range_deg=None if rng is None else tuple(rng))


@dataclass(frozen=True, eq=False)
class PyFAIGoniometerModel:
    """A pyFAI goniometer file whose transformation is not one of ours, used as it is.

    ``content`` is the file's JSON; geometries come from pyFAI's ``Goniometer.get_ai``.
    """

    content: dict
    source: str = "pyFAI goniometer"

    kind: ClassVar[str] = "pyfai_goniometer"

    def __post_init__(self) -> None:
        self.goniometer()  # fail now, naming the source, rather than at the first position

    def goniometer(self) -> Goniometer:
        """pyFAI's ``Goniometer`` of the content (rebuilt at each call: pyFAI's objects are mutable)."""
        return goniometer_from_content(self.content, self.source)

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(self.goniometer().trans_function.pos_names)

    @property
    def position_type(self) -> type:
        """A named tuple of :attr:`axes` (build a position from the axes' values)."""
        return namedtuple("GoniometerPosition", self.axes)

    def poni_at(self, position) -> Poni:
        """The geometry at a position (a sequence of the axes' values, or a number for a
        one-axis goniometer), through pyFAI's ``Goniometer.get_ai``.

        Raises
        ------
        GeometryError
            The wrong number of values, or a geometry pyFAI cannot compute or that is non-physical.
        """
        values = (position,) if isinstance(position, (int, float)) else tuple(position)
        gonio = self.goniometer()
        axes = tuple(gonio.trans_function.pos_names)
        if len(values) != len(axes):
            raise GeometryError(f"{self.source}: position {position!r} has {len(values)} values, the goniometer "
                                f"has axes {axes}")
        try:
            ai = gonio.get_ai(values[0] if len(values) == 1 else values)
        except Exception as exc:  # numexpr and pyFAI raise many types
            raise GeometryError(f"{self.source}: pyFAI cannot compute the geometry at {position!r}: {exc}") from exc
        return Poni.from_integrator(ai, source=f"{self.source} at {position!r}")

    def outside_calibrated_range(self, position) -> str | None:
        """None: a pyFAI goniometer file does not say which positions were calibrated."""
        return None

    def with_wavelength(self, wavelength_m: float) -> PyFAIGoniometerModel:
        """The same goniometer at another wavelength (m)."""
        content = copy.deepcopy(self.content)
        content["wavelength"] = wavelength_m
        return PyFAIGoniometerModel(content, self.source)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "goniometer": copy.deepcopy(self.content), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> PyFAIGoniometerModel:
        return cls(copy.deepcopy(data["goniometer"]), data.get("source", "pyFAI goniometer"))


PositionModel = DetectorPositionModel | ArmModel | PyFAIGoniometerModel


def position_model_from_dict(data: dict) -> PositionModel:
    """The position model of a dict from ``as_dict`` (dispatch on ``data["kind"]``; no
    kind is the translation stage, whose ``as_dict`` has none).

    Raises
    ------
    GeometryError
        An unknown kind, or a dict its model cannot be built from (the key is named).
    """
    kind = data.get("kind", "stage") if isinstance(data, dict) else None
    readers = {"stage": DetectorPositionModel.from_dict, "arm": ArmModel.from_dict,
               "arm_translation": ArmModel.from_dict, "pyfai_goniometer": PyFAIGoniometerModel.from_dict}
    if kind not in readers:
        raise GeometryError(f"unknown position model kind {kind!r}; known: {sorted(readers)}")
    try:
        return readers[kind](data)
    except KeyError as exc:
        raise GeometryError(f"position model of kind {kind!r} has no {exc}") from exc
    except TypeError as exc:
        raise GeometryError(f"position model of kind {kind!r} is malformed: {exc}") from exc


def stage_transformation(model: DetectorPositionModel) -> GeometryTransformation:
    """The stage model in pyFAI's terms: parameters :data:`STAGE_PARAMETERS` (m, rad),
    axes :data:`STAGE_POS_NAMES` (mm), the reference position as constants."""
    ref = model.reference_position
    return GeometryTransformation(
        param_names=list(STAGE_PARAMETERS), pos_names=list(STAGE_POS_NAMES),
        dist_expr="dist_0 + 0.001 * (distance - distance_ref)", poni1_expr="poni1_0 - 0.001 * (y - y_ref)",
        poni2_expr="poni2_0 - 0.001 * (x - x_ref)", rot1_expr="rot1_0", rot2_expr="rot2_0", rot3_expr="rot3_0",
        constants={"x_ref": ref.x, "y_ref": ref.y, "distance_ref": ref.distance})


def _stage_goniometer(model: DetectorPositionModel) -> Goniometer:
    ref = model.reference
    return Goniometer([getattr(ref, p) for p in PONI_PARAMETERS], stage_transformation(model),
                      detector=ref.detector_model(), wavelength=ref.wavelength)


def write_goniometer_json(model: DetectorPositionModel | ArmModel, path: str | Path) -> Path:
    """Write ``model`` as pyFAI's goniometer JSON (readable by ``Goniometer.sload``) and
    return the path; an arm's kind and calibrated range go under :data:`EXTRA_KEY`.

    Raises
    ------
    GeometryError
        ``model`` is not a stage or arm model.
    OutputError
        The file cannot be written (the path is named).
    """
    path = Path(path)
    if isinstance(model, ArmModel):
        content = model.goniometer().to_dict()
        rng = model.calibrated_range_deg
        content[EXTRA_KEY] = {"kind": model.kind, "calibrated_range_deg": None if rng is None else list(rng)}
    elif isinstance(model, DetectorPositionModel):
        content = _stage_goniometer(model).to_dict()
        content[EXTRA_KEY] = {"kind": "stage"}
    else:
        raise GeometryError(f"cannot write a {type(model).__name__} as a pyFAI goniometer file ({path})")
    try:
        path.write_text(json.dumps(content, indent=2), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write goniometer file {path}: {exc}") from exc
    return path


def goniometer_from_content(content: dict, source: str) -> Goniometer:
    """pyFAI's ``Goniometer`` of a goniometer JSON's content, as ``Goniometer.sload``
    builds it (version 2 and 1.1 files).

    Raises
    ------
    GeometryError
        Naming ``source``: not a goniometer file, or a transformation or detector pyFAI rejects.
    """
    if not isinstance(content, dict) or "trans_function" not in content:
        raise GeometryError(f"{source} is not a pyFAI goniometer file (no 'trans_function')")
    if content.get("content") not in goniometer_file_versions():
        raise GeometryError(f"{source} is not a pyFAI goniometer file (content {content.get('content')!r})")
    dico = copy.deepcopy(content)
    trans = dict(dico["trans_function"])
    kind = trans.pop("content", "GeometryTransformation")
    classes = {"GeometryTransformation": GeometryTransformation, "GeometryTranslation": GeometryTransformation,
               "ExtendedTransformation": pyFAI.goniometer.ExtendedTransformation}
    if kind not in classes:
        raise GeometryError(f"{source}: unknown transformation {kind!r}; pyFAI knows {sorted(classes)}")
    try:
        detector = goniometer_detector(dico)
        funct = classes[kind](**trans)
        return Goniometer(param=dico.get("param", []), trans_function=funct, detector=detector,
                          wavelength=dico.get("wavelength"))
    except Exception as exc:  # numexpr, pyFAI's detector factory and TypeError on unknown keys
        raise GeometryError(f"{source}: pyFAI cannot build its goniometer: {exc}") from exc


def read_goniometer_json(path: str | Path) -> PositionModel:
    """Read a pyFAI goniometer JSON file: our stage or arm model when its transformation
    is ours (as :func:`write_goniometer_json` writes it, or pyFAI saves it), else a
    :class:`PyFAIGoniometerModel`.

    Raises
    ------
    GeometryError
        Naming the file: missing, not JSON, not a goniometer file, without a wavelength,
        or with an expression pyFAI cannot evaluate.
    """
    path = Path(path)
    source = f"goniometer file {path}"
    if not path.is_file():
        raise GeometryError(f"{source} not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeometryError(f"{source} is not readable JSON: {exc}") from exc
    gonio = goniometer_from_content(content, source)
    if not gonio.wavelength:
        raise GeometryError(f"{source} has no wavelength")
    ours = _our_model(gonio, content, source)
    if ours is not None:
        return ours
    model = PyFAIGoniometerModel(content, source)
    model.poni_at([0.0] * len(model.axes))  # evaluate every expression once: fail here, naming the file
    return model


def _our_model(gonio: Goniometer, content: dict, source: str) -> DetectorPositionModel | ArmModel | None:
    """Our model when the goniometer's transformation is one of ours, else None."""
    trans = gonio.trans_function
    if not isinstance(trans, GeometryTransformation):
        return None
    values = dict(zip(trans.param_names, (float(v) for v in gonio.param)))
    extra = content.get(EXTRA_KEY) if isinstance(content.get(EXTRA_KEY), dict) else {}
    for candidate in _candidates(trans, values, gonio, source, extra):
        if _same_transformation(candidate, trans):
            return candidate
    return None


def _candidates(trans: GeometryTransformation, values: dict, gonio: Goniometer, source: str, extra: dict):
    """Our models that could have written ``trans`` (built lazily, from its parameter values)."""
    if tuple(trans.param_names) == STAGE_PARAMETERS and tuple(trans.pos_names) == STAGE_POS_NAMES:
        consts = trans.variables
        if all(k in consts for k in ("x_ref", "y_ref", "distance_ref")):
            reference = _reference(gonio, [values[p] for p in STAGE_PARAMETERS], source)
            yield DetectorPositionModel(reference, StagePosition(consts["x_ref"], consts["y_ref"],
                                                                 consts["distance_ref"]))
    if tuple(trans.param_names) == ARM_PARAMETERS and tuple(trans.pos_names) in (ARM_AXES[:1], ARM_AXES):
        reference = _reference(gonio, [values[f"{p}_ref"] for p in PONI_PARAMETERS], source)
        rng = extra.get("calibrated_range_deg")
        for plane in ARM_PLANES:
            yield ArmModel(reference, plane=plane, offset_deg=values["offset_deg"], scale=values["scale"],
                           carries_translation=len(trans.pos_names) == 2,
                           calibrated_range_deg=None if rng is None else tuple(rng))


def _reference(gonio: Goniometer, values: list[float], source: str) -> Poni:
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    ai = AzimuthalIntegrator(**dict(zip(PONI_PARAMETERS, values)), detector=gonio.detector,
                             wavelength=gonio.wavelength)
    return Poni.from_integrator(ai, source=source)


def _same_transformation(model: DetectorPositionModel | ArmModel, trans: GeometryTransformation) -> bool:
    ours = model.transformation() if isinstance(model, ArmModel) else stage_transformation(model)
    squash = lambda text: None if text is None else "".join(text.split())  # noqa: E731
    return all(squash(ours.expressions.get(k)) == squash(trans.expressions.get(k)) for k in PONI_PARAMETERS)
