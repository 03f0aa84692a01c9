"""GSAS-II image controls (``.imctrl``) as a pyFAI geometry.

An ``.imctrl`` file is plain text, one ``key:value`` per line; values are Python
literals as GSAS-II wrote them, numbers sometimes wrapped as ``np.float64(168.59)``.
They are parsed with :func:`ast.literal_eval` after unwrapping those (never
``eval``). The geometry keys are ``wavelength`` (A), ``distance`` (mm, sample to the
detector plane along its normal), ``center`` (x, y in mm from the image origin),
``tilt`` and ``rotation`` (deg) and ``invert_x``/``invert_y`` (GSAS-II flips the image
left-right/up-down before applying them).

Conversion to pyFAI (checked to 1e-14 deg against GSAS-II): pyFAI ``dist`` = distance,
Fit2D direct distance = distance / cos(tilt), beam centre = mm / pixel size,
tilt-plane rotation = rotation + 90 deg, on the image as GSAS-II uses it (flipped).
The flip is **absorbed into the geometry** — frames are integrated as the file
holds them: a pyFAI detector orientation of the flipped array (``invert_y``: pyFAI
orientation 2, TopRight; ``invert_x``: 4; both: 1; neither: 3, pyFAI's default).
A pixel then has the same 2theta and the same azimuth chi as in the flipped image
with orientation 3, so azimuths (e.g. of a load) are those of the image as GSAS-II
displays it, in pyFAI's chi convention.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import GeometryError
from ..science.geometry import Poni

#: Keys an ``.imctrl`` file must hold for a geometry.
GEOMETRY_KEYS = ("wavelength", "distance", "center", "tilt", "rotation")
#: pyFAI detector orientation of an image flipped by GSAS-II, by (invert_x, invert_y).
ORIENTATIONS = {(False, False): 3, (False, True): 2, (True, False): 4, (True, True): 1}
#: ``np.float64(1.5)``-style wrappers of numbers in values (unwrapped before parsing).
_NUMPY_SCALAR = re.compile(r"np\.(?:float|int)\d*\(([^()]*)\)")


@dataclass(frozen=True)
class ImageControls:
    """The geometry of a GSAS-II image-controls file.

    Lengths in mm, angles in deg, wavelength in A; ``centre_mm`` is (x, y) from the
    image origin; ``polarization`` is GSAS-II's ``PolaVal`` (pyFAI's polarization
    factor), None when absent.
    """

    path: Path
    wavelength_A: float
    distance_mm: float
    centre_mm: tuple[float, float]
    tilt_deg: float
    rotation_deg: float
    invert_x: bool
    invert_y: bool
    polarization: float | None


def parse_value(text: str) -> object:
    """A value of an ``.imctrl`` line as a Python literal (numbers, booleans, strings,
    lists, dicts), ``np.float64(x)`` read as ``x``; text that is no literal stays text."""
    unwrapped = _NUMPY_SCALAR.sub(r"\1", text.strip())
    try:
        return ast.literal_eval(unwrapped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text.strip()


def read_controls_text(path: str | Path) -> dict[str, object]:
    """Every ``key:value`` line of an ``.imctrl`` file, values parsed (:func:`parse_value`).

    Raises
    ------
    GeometryError
        The file is missing, unreadable or not text.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise GeometryError(f"GSAS-II image controls file not found: {path}") from None
    except UnicodeDecodeError:
        raise GeometryError(f"GSAS-II image controls {path} is not text (is it an .imctrl file?)") from None
    except OSError as exc:
        raise GeometryError(f"cannot read GSAS-II image controls {path}: {exc.strerror or exc}") from exc
    values = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = parse_value(value)
    return values


def _number(values: dict, key: str, path: Path) -> float:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GeometryError(f"GSAS-II image controls {path}: {key} is {value!r}, not a finite number")
    return float(value)


def read_imctrl(path: str | Path) -> ImageControls:
    """Read the geometry of a GSAS-II ``.imctrl`` file.

    Raises
    ------
    GeometryError
        Naming the file and key: unreadable, a geometry key (:data:`GEOMETRY_KEYS`)
        missing or not a finite number, a centre that is not two numbers, a
        non-positive wavelength or distance.
    """
    path = Path(path)
    values = read_controls_text(path)
    missing = [key for key in GEOMETRY_KEYS if key not in values]
    if missing:
        raise GeometryError(f"GSAS-II image controls {path} has no {', '.join(missing)} (is it an .imctrl file?)")
    centre = values["center"]
    if not (isinstance(centre, (list, tuple)) and len(centre) == 2):
        raise GeometryError(f"GSAS-II image controls {path}: center is {centre!r}, not [x, y] in mm")
    cx, cy = (_number({"center": c}, "center", path) for c in centre)
    wavelength, distance = _number(values, "wavelength", path), _number(values, "distance", path)
    if not (wavelength > 0 and distance > 0):
        raise GeometryError(f"GSAS-II image controls {path}: wavelength {wavelength} A and distance {distance} mm "
                            "must be positive")
    pola = values.get("PolaVal")
    polarization = None
    if isinstance(pola, (list, tuple)) and pola:
        polarization = _number({"PolaVal": pola[0]}, "PolaVal", path)
        if not -1.0 <= polarization <= 1.0:
            raise GeometryError(f"GSAS-II image controls {path}: PolaVal {polarization} is outside [-1, 1]")
    return ImageControls(path, wavelength, distance, (cx, cy), _number(values, "tilt", path),
                         _number(values, "rotation", path), values.get("invert_x") is True,
                         values.get("invert_y") is True, polarization)


def imctrl_poni(controls: ImageControls, pixel_size_m: tuple[float, float], shape: tuple[int, int]) -> Poni:
    """The pyFAI geometry of ``controls`` for frames as the file holds them (the flip
    absorbed as the detector's orientation, see the module docstring).

    Parameters
    ----------
    controls : ImageControls
        From :func:`read_imctrl`.
    pixel_size_m : (float, float)
        Pixel size along rows and columns (m): GSAS-II's centre is in mm.
    shape : (int, int)
        Detector shape (rows, columns), e.g. that of the frames.
    """
    orientation = ORIENTATIONS[(controls.invert_x, controls.invert_y)]
    config = json.dumps({"pixel1": pixel_size_m[0], "pixel2": pixel_size_m[1], "max_shape": [int(n) for n in shape],
                         "orientation": orientation}, sort_keys=True)
    cx, cy = controls.centre_mm
    return Poni.from_fit2d(controls.distance_mm / math.cos(math.radians(controls.tilt_deg)),
                           cx * 1e-3 / pixel_size_m[1], cy * 1e-3 / pixel_size_m[0], tilt_deg=controls.tilt_deg,
                           tilt_plane_deg=controls.rotation_deg + 90.0, wavelength=controls.wavelength_A * 1e-10,
                           detector="Detector", detector_config=config)


def header_pixel_size_m(header: dict) -> tuple[float, float] | None:
    """Pixel size (rows, columns; m) from an image header that gives it (MAR345:
    ``PixelHeight``/``PixelLength`` in mm), else None."""
    try:
        height, length = float(header["PixelHeight"]), float(header["PixelLength"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0 < height < 10 and 0 < length < 10):
        return None
    return height * 1e-3, length * 1e-3
