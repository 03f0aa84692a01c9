"""The inputs of the file commands (``integrate``, ``calibrate``, ``gain-map``): a PONI
made to declare its detector's shape, and the dark, gain and mask images that go with
the frames, each read with :func:`xrd_bluesky.frames.reader.read_image` and checked
against the detector and for plausibility
(:mod:`xrd_bluesky.science.reduction.input_checks`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GeometryError, ShapeMismatchError
from ..frames.reader import ImageFile, read_image
from ..science.geometry import Poni
from ..science.reduction.input_checks import (
    check_dark,
    check_exposures,
    check_gain,
    check_mask,
    default_max_count,
)
from ..science.reduction.integration import check_frame_shape


def read_geometry(path: str | Path, *, detector: str | None = None, shape: tuple[int, int] | None = None) -> Poni:
    """A PONI file's geometry on a detector of known shape, so that every frame's shape
    is checked against it.

    Parameters
    ----------
    path : str or Path
        pyFAI PONI file.
    detector : str, optional
        pyFAI detector model (e.g. ``"Pilatus1M"``) for a PONI that names none
        (version 1) or Dioptas' generic ``Detector``; its pixel size must be the PONI's.
    shape : (int, int), optional
        Detector shape (rows, columns) for such a PONI.

    Raises
    ------
    GeometryError
        The PONI is unreadable or non-physical, contradicts ``detector`` or ``shape``,
        or neither it nor the options give the detector's shape (then a transposed or
        cropped frame could not be told from a good one).
    """
    poni = Poni.read(path).with_detector(detector, shape)
    if poni.detector_model().shape is None:
        raise GeometryError(
            f"PONI file {path} declares no detector shape (detector {poni.detector!r}, a version-1 PONI or a "
            "generic detector): give --detector MODEL (pyFAI's name, e.g. Pilatus1M) or --shape ROWSxCOLS, so "
            "that a transposed or cropped frame is caught")
    return poni


def read_one(path: str | Path, role: str, poni: Poni, *, average: bool = False) -> tuple[np.ndarray, ImageFile]:
    """An image (float64) checked against the detector's shape, and its file.

    A file of several frames is averaged when ``average`` (darks), else refused."""
    image = read_image(path, role)
    if len(image.frames) > 1 and not average:
        raise ShapeMismatchError(f"{role} file {path} holds {len(image.frames)} frames; give a single image")
    for i, (_, frame) in enumerate(image.frames):
        check_frame_shape(frame, poni, f"{role} file {path}" + (f" frame {i}" if len(image.frames) > 1 else ""))
    return image.mean(), image


def saturation_level(image: ImageFile, max_count: float | None = None) -> float | None:
    """Counts at and above which a pixel of ``image`` is masked: the user's ``max_count``,
    else the default of :func:`~xrd_bluesky.science.reduction.input_checks.default_max_count`
    (the header's count cut-off, or the integer type's largest value)."""
    if max_count is not None:
        return max_count
    return default_max_count(np.asarray(image.frames[0][1]).dtype, image.count_cutoff)


def _gain_form(image: ImageFile) -> str:
    """``"gain"`` or ``"inverse"``: the ``form`` key that xrd-bluesky's gain-map export
    writes into the file's header (TIFF image description or EDF header)."""
    form = image.header.get("form")
    if form is None:
        for line in str(image.header.get("imageDescription", "")).splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "form":
                form = value
    return str(form).strip() if form is not None else "gain"


@dataclass(frozen=True)
class FrameCorrections:
    """What the file commands apply to every frame: a dark (counts, of the frames'
    exposure), a gain map (``corrected = raw / gain``), the static mask (True = bad:
    the mask file, non-finite dark pixels and unusable gain pixels) and the saturation
    level (counts at and above which a pixel is masked; None: from each frame)."""

    dark: np.ndarray | None = None
    dark_exposure_s: float | None = None
    flat: np.ndarray | None = None
    mask: np.ndarray | None = None
    max_count: float | None = None
    dark_file: str | None = None

    def max_count_for(self, image: ImageFile) -> float | None:
        """The saturation level of ``image``'s frames (:func:`saturation_level`)."""
        return saturation_level(image, self.max_count)

    def check_frame(self, frame: np.ndarray, image: ImageFile, poni: Poni, source: str) -> None:
        """Check ``frame`` (of ``image``) against the detector and the dark."""
        check_frame_shape(frame, poni, source)
        if self.dark is None:
            return
        check_exposures(self.dark_exposure_s, image.exposure_s, f"dark {self.dark_file}", source)
        check_dark(self.dark, frame, self.mask, self.max_count_for(image), f"dark {self.dark_file}", source)


def read_corrections(poni: Poni, *, dark: str | None = None, gain: str | None = None, mask: str | None = None,
                     max_count: float | None = None) -> FrameCorrections:
    """Read and check the dark, gain and mask files of a file command.

    Raises
    ------
    CorruptFrameError, ShapeMismatchError
        A file is unreadable or does not fit the detector (named).
    ImplausibleInputError
        A mask that masks most pixels, a gain map whose median is far from 1.
    """
    bad: list[np.ndarray] = []
    dark_image = flat = None
    dark_exposure = None
    if dark:
        dark_image, image = read_one(dark, "dark", poni, average=True)
        dark_exposure = image.exposure_s
        bad.append(~np.isfinite(dark_image))
        dark_image = np.where(np.isfinite(dark_image), dark_image, 0.0).astype(np.float32)
    if gain:
        values, image = read_one(gain, "gain", poni)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = 1.0 / values if _gain_form(image) == "inverse" else values
            gain_bad = ~np.isfinite(values) | (values <= 0)
        check_gain(values, gain_bad, f"gain map {gain}")
        flat = np.where(gain_bad, 1.0, values).astype(np.float32)
        bad.append(gain_bad)
    if mask:
        mask_image = read_one(mask, "mask", poni)[0] != 0
        check_mask(mask_image, f"mask {mask}")
        bad.append(mask_image)
    return FrameCorrections(dark_image, dark_exposure, flat, np.logical_or.reduce(bad) if bad else None, max_count,
                            dark)
