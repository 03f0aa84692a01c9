"""``xrd-bluesky integrate``: azimuthal integration of image files to ``.xye`` and ``.chi``.

For each frame of each input file (TIFF/EDF/CBF through fabio; HDF5/NeXus at
``/entry/data/data``) the command writes two text patterns into the output directory:

``<name>.xye``
    Three columns, radial position, intensity, 1-sigma error, after ``#`` comment lines
    that name the radial unit, the PONI, dark, gain and mask files, the polarization
    factor and the versions of xrd-bluesky and pyFAI.
``<name>.chi``
    The classic Fit2D "chi" file: title line, radial-axis label line (Fit2D's own
    labels, e.g. ``2-Theta Angle (Degrees)``, ``Q (Inverse Nanometres)``), intensity
    label line, number-of-points line, then ``radial intensity`` rows, as Fit2D and
    GSAS-II's "Fit2D chi" exporter write it.

Bins without any valid pixel (NaN intensity) are left out of both files: Rietveld
programs do not accept NaN. The ``.xye`` header says how many bins were left out.

Compatibility with GSAS-II's ``.xye``/``.chi`` importer (``G2pwd_xye``), which guesses
the x axis from the header:

* in an ``.xye`` file, the first ``#`` line that contains a lowercase ``q`` makes GSAS-II
  read the x column as q and take the line's second word as the wavelength. 2-theta files
  therefore have no lowercase ``q`` in their own header text (a file path that contains
  one would still mislead GSAS-II), and q files start with the line
  ``# <wavelength> wavelength in nm`` (``A`` for ``q_A^-1``), in the length unit inverse to
  the q unit, so that GSAS-II's ``2theta = 2 asin(wavelength q / 4 pi)`` is right;
* GSAS-II imports only 2-theta ``.chi`` files (a q ``.chi`` needs a wavelength that the
  Fit2D format has no place for); use ``--unit 2th_deg`` or the ``.xye`` file for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import CorruptFrameError, ShapeMismatchError, XRDBlueskyError
from .science.geometry import Poni
from .science.integration import UNITS, IntegrationResult, check_frame_shape, integrate_1d

#: Suffixes read with h5py; everything else goes through fabio.
HDF5_SUFFIXES = (".h5", ".hdf5", ".nxs")

#: Dataset of the frames in an HDF5/NeXus file (NeXus/area-detector convention).
HDF5_DATASET = "/entry/data/data"

#: Fit2D's radial-axis labels of a .chi file, per pyFAI unit name. Fit2D writes
#: "Q (Inverse Nanometres)" for its q scans; it has no 1/A scan, the label follows suit.
CHI_LABELS = {
    "2th_deg": "2-Theta Angle (Degrees)",
    "q_nm^-1": "Q (Inverse Nanometres)",
    "q_A^-1": "Q (Inverse Angstroms)",
}

#: Wavelength unit inverse to each q unit, with its factor from metres (GSAS-II line).
_WAVELENGTH_UNIT = {"q_nm^-1": ("nm", 1e9), "q_A^-1": ("A", 1e10)}

#: Default polarization factor: horizontally polarised synchrotron beam.
DEFAULT_POLARIZATION = 0.99


# --------------------------------------------------------------------------- reading

@contextmanager
def _fabio_errors() -> Iterator[list[str]]:
    """Collect the messages fabio logs at ERROR level while the block runs.

    fabio reports some corrupt files only in its log: a truncated TIFF gives
    ``data = None``, a CBF with a bad checksum gives data anyway."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.ERROR)
    logger = logging.getLogger("fabio")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


#: Start of the binary section of a CBF file (fabio's ``CbfImage.STARTER``).
_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"

#: First bytes of a TIFF file (little- and big-endian).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def _tiff_truncation(path: Path) -> str | None:
    """Why the TIFF file ``path`` is truncated — a strip of image data that ends beyond
    the end of the file — or None.

    fabio reads a compressed TIFF through PIL/libtiff, which decode a strip cut short
    into an image padded with garbage and say so only on the C library's stderr."""
    from fabio import TiffIO

    size = path.stat().st_size
    try:
        with TiffIO.TiffIO(str(path)) as tiff:
            infos = [tiff.getInfo(i) for i in range(tiff.getNumberOfImages())]
    except struct.error as exc:  # TiffIO ran off the end of the file
        return f"an image file directory is cut short ({exc})"
    except Exception:  # layouts TiffIO cannot parse (tiled TIFF): PIL itself refuses those cut short
        return None
    for i, info in enumerate(infos):
        for j, (offset, count) in enumerate(zip(info["stripOffsets"], info["stripByteCounts"])):
            if offset + count > size:
                return f"strip {j} of image {i} ends at byte {offset + count}, the file has {size} bytes"
    return None


def _read_fabio(path: Path) -> tuple[list[np.ndarray], bool]:
    """All frames of an image file that fabio reads and whether the file is a
    multi-frame file, or :class:`CorruptFrameError`."""
    import fabio

    if path.suffix.lower() == ".cbf" and _CBF_BINARY_START not in path.read_bytes():
        # fabio 2026.6 loops for ever looking for the binary section of such a file
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): no CBF binary section")
    with open(path, "rb") as f:
        is_tiff = f.read(4) in _TIFF_MAGIC
    truncation = _tiff_truncation(path) if is_tiff else None
    if truncation:
        raise CorruptFrameError(f"cannot read frame file {path} (truncated TIFF): {truncation}")
    with _fabio_errors() as errors:
        try:
            image = fabio.open(str(path))
            frames = [image.data]
            for i in range(1, int(getattr(image, "nframes", 1) or 1)):
                frames.append(image.getframe(i).data)
        except Exception as exc:  # fabio raises many types on bad files
            raise CorruptFrameError(f"cannot read frame file {path}: {type(exc).__name__}: {exc}") from exc
    if any(frame is None for frame in frames) or errors or getattr(image, "incomplete_file", False):
        detail = "; ".join(errors) or "file is incomplete"
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): {detail}")
    return [np.asarray(frame) for frame in frames], len(frames) > 1


def _read_hdf5(path: Path) -> tuple[list[np.ndarray], bool]:
    """The frames of ``HDF5_DATASET`` in ``path`` (one per 2D slice of a 3D stack) and
    whether the dataset is a stack."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other detector filters)

    try:
        with h5py.File(path, "r") as f:
            dataset = f.get(HDF5_DATASET)
            if not isinstance(dataset, h5py.Dataset):
                raise CorruptFrameError(f"{path} has no dataset {HDF5_DATASET}")
            if dataset.ndim == 2:
                return [np.asarray(dataset[()])], False
            if dataset.ndim == 3:
                return [np.asarray(dataset[i]) for i in range(dataset.shape[0])], True
            raise ShapeMismatchError(f"{path}:{HDF5_DATASET} has shape {dataset.shape}; "
                                     "expected one frame (2D) or a stack of frames (3D)")
    except XRDBlueskyError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... on bad files
        raise CorruptFrameError(f"cannot read {HDF5_DATASET} from {path}: {type(exc).__name__}: {exc}") from exc


def read_frames(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Read the frames of an image file, each with the name its output files take.

    Parameters
    ----------
    path : str or Path
        A TIFF, EDF, CBF... file (any format fabio reads; each frame of a multi-frame
        file is returned) or an HDF5/NeXus file (``.h5``, ``.hdf5``, ``.nxs``) whose
        frames are the dataset ``/entry/data/data``, 2D (one frame) or 3D (a stack,
        frames along the first axis).

    Returns
    -------
    list of (str, ndarray)
        ``(name, frame)`` pairs, frames in counts as stored. A single frame is named by
        the file's stem, the frames of a stack ``<stem>_00000``, ``<stem>_00001``...

    Raises
    ------
    CorruptFrameError
        The file is missing, unreadable, truncated or corrupt, or an HDF5 file has no
        ``/entry/data/data``; the message names the file (and the dataset).
    ShapeMismatchError
        The HDF5 dataset is neither 2D nor 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptFrameError(f"frame file not found: {path}")
    frames, stacked = _read_hdf5(path) if path.suffix.lower() in HDF5_SUFFIXES else _read_fabio(path)
    if not stacked:
        return [(path.stem, frames[0])]
    return [(f"{path.stem}_{i:05d}", frame) for i, frame in enumerate(frames)]


def _read_one(path: str | Path, role: str, poni: Poni, *, average: bool = False) -> np.ndarray:
    """A dark, gain or mask image (float64), checked against the detector's shape.

    A file of several frames is averaged when ``average`` (darks), else refused."""
    try:
        frames = [frame for _, frame in read_frames(path)]
    except CorruptFrameError as exc:
        raise CorruptFrameError(f"{role} file: {exc}") from exc
    if len(frames) > 1 and not average:
        raise ShapeMismatchError(f"{role} file {path} holds {len(frames)} frames; give a single image")
    for frame in frames:
        check_frame_shape(frame, poni, f"{role} file {path}")
    return np.mean([np.asarray(f, dtype=np.float64) for f in frames], axis=0)


def _gain_form(path: str | Path) -> str:
    """``"gain"`` or ``"inverse"``: the ``form`` key that xrd-bluesky's gain-map export
    writes into the file's header (TIFF image description or EDF header)."""
    if Path(path).suffix.lower() in HDF5_SUFFIXES:
        return "gain"
    import fabio

    try:
        header = fabio.open(str(path)).header
    except Exception:  # already read once by _read_one; no header is no declaration
        return "gain"
    form = header.get("form")
    if form is None:
        for line in str(header.get("imageDescription", "")).splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "form":
                form = value
    return str(form).strip() if form is not None else "gain"


def read_gain(path: str | Path, poni: Poni) -> tuple[np.ndarray, np.ndarray]:
    """Read a gain map (``corrected = raw / gain``) and the pixels it cannot correct.

    Parameters
    ----------
    path : str or Path
        Gain image (dimensionless, about 1). A file exported by ``xrd-bluesky gain-map
        --form inverse`` (header ``form=inverse``) holds ``1/gain`` and is inverted.
    poni : Poni
        Geometry whose detector shape the image must have.

    Returns
    -------
    flat : ndarray of float32
        Gain, with 1.0 on the bad pixels.
    bad : ndarray of bool
        True where the gain is not finite or not positive (masked in the integration).
    """
    values = _read_one(path, "gain", poni)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = 1.0 / values if _gain_form(path) == "inverse" else values
        bad = ~np.isfinite(gain) | (gain <= 0)
    return np.where(bad, 1.0, gain).astype(np.float32), bad


# --------------------------------------------------------------------------- writing

def _finite_rows(result: IntegrationResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Radial, intensity and sigma of the bins with a finite intensity and sigma, and
    the number of bins left out."""
    radial = np.asarray(result.radial, dtype=float)
    intensity = np.asarray(result.intensity, dtype=float)
    sigma = np.asarray(result.sigma, dtype=float)
    keep = np.isfinite(radial) & np.isfinite(intensity) & np.isfinite(sigma)
    return radial[keep], intensity[keep], sigma[keep], int(keep.size - keep.sum())


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so that a reader never
    sees half a pattern."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _one_line(value) -> str:
    """``value`` as text on one line (``none`` for None): line breaks become spaces."""
    return "none" if value is None else str(value).replace("\r", " ").replace("\n", " ")


def write_xye(path: str | Path, result: IntegrationResult, header: dict, *,
              wavelength_m: float | None = None) -> int:
    """Write a pattern as a three-column ``.xye`` file (radial, intensity, sigma).

    Parameters
    ----------
    path : str or Path
        Output file.
    result : IntegrationResult
        Pattern from :func:`~xrd_bluesky.science.integration.integrate_1d`.
    header : dict
        Written as ``# key: value`` comment lines (newlines in values become spaces).
    wavelength_m : float, optional
        Wavelength (m). For q patterns it is written first, in the length unit inverse
        to the q unit, as ``# <value> wavelength in nm`` (or ``A``): GSAS-II reads it to
        convert q to 2-theta.

    Returns
    -------
    int
        Number of data rows written. Bins with a NaN intensity or sigma (no valid
        pixel) are left out, as the header says.
    """
    radial, intensity, sigma, omitted = _finite_rows(result)
    lines = []
    if wavelength_m is not None and result.unit in _WAVELENGTH_UNIT:
        name, factor = _WAVELENGTH_UNIT[result.unit]
        lines.append(f"# {wavelength_m * factor:.8g} wavelength in {name} (for GSAS-II: x is q in 1/{name})")
    lines += [
        "# xrd-bluesky azimuthal integration; columns: radial, intensity, sigma",
        f"# radial: {result.unit} ({result.radial_units})",
        "# intensity: counts per pixel (pyFAI solid-angle normalisation), sigma: 1 s.d. (Poisson model)",
        f"# omitted: {omitted} of {np.size(result.radial)} bins had no valid pixel (NaN) and are left out; "
        "Rietveld programs reject NaN",
    ]
    lines += [f"# {_one_line(key)}: {_one_line(value)}" for key, value in header.items()]
    lines.append(f"# {result.unit}  I  sigma")
    rows = [f"{x:.7e}  {y:.7e}  {s:.7e}" for x, y, s in zip(radial, intensity, sigma)]
    _write_text(Path(path), "\n".join(lines + rows) + "\n")
    return len(rows)


def write_chi(path: str | Path, result: IntegrationResult, title: str) -> int:
    """Write a pattern as a Fit2D ``.chi`` file.

    The layout is Fit2D's (and GSAS-II's "Fit2D chi" exporter's): a title line, the
    radial-axis label (``2-Theta Angle (Degrees)``, ``Q (Inverse Nanometres)`` or
    ``Q (Inverse Angstroms)``), ``Intensity``, the number of points, then one
    ``radial intensity`` row per point.

    Parameters
    ----------
    path : str or Path
        Output file.
    result : IntegrationResult
        Pattern from :func:`~xrd_bluesky.science.integration.integrate_1d`.
    title : str
        First line (made a single line).

    Returns
    -------
    int
        Number of data rows written; bins with a NaN intensity are left out.
    """
    if result.unit not in CHI_LABELS:
        raise ValueError(f"no Fit2D .chi label for radial unit {result.unit!r}; use one of {sorted(CHI_LABELS)}")
    radial, intensity, _, _ = _finite_rows(result)
    lines = [_one_line(title), CHI_LABELS[result.unit], "Intensity", f"       {len(radial)}"]
    lines += [f" {x:.7e}   {y:.7e}" for x, y in zip(radial, intensity)]
    _write_text(Path(path), "\n".join(lines) + "\n")
    return len(radial)


# --------------------------------------------------------------------------- command

def _polarization(text: str) -> float | None:
    """argparse type of ``--polarization``: a factor in [-1, 1] or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [-1, 1] or 'none'") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"polarization factor {value} is outside [-1, 1]")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 bins, not {value}")
    return value


def add_parser(subparsers) -> None:
    """Add the ``integrate`` subcommand to an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``; the new parser's
        ``func`` default is :func:`run`.
    """
    p = subparsers.add_parser(
        "integrate", help="azimuthally integrate image files to .xye and Fit2D .chi patterns",
        description="Integrate each frame of each file to OUT_DIR/<name>.xye (radial, intensity, sigma) "
                    "and OUT_DIR/<name>.chi (Fit2D). Empty bins (no valid pixel) are left out.")
    p.add_argument("frames", nargs="+", metavar="FRAMES",
                   help=f"image files: TIFF/EDF/CBF (fabio) or HDF5 {'/'.join(HDF5_SUFFIXES)} at {HDF5_DATASET}")
    p.add_argument("--poni", required=True, help="geometry (pyFAI PONI file)")
    p.add_argument("--dark", help="dark image of the same exposure (counts); several frames are averaged")
    p.add_argument("--gain", help="gain map: frames are divided by it; non-positive or non-finite pixels are masked")
    p.add_argument("--mask", help="mask image, non-zero = bad pixel")
    p.add_argument("--npt", type=_positive_int, default=2000, help="number of radial bins (default: 2000)")
    p.add_argument("--unit", default="q_nm^-1", choices=sorted(UNITS),
                   help="radial unit: q (1/nm or 1/A) or 2-theta (deg) (default: q_nm^-1)")
    p.add_argument("--polarization", type=_polarization, default=DEFAULT_POLARIZATION, metavar="F",
                   help=f"pyFAI polarization factor in [-1, 1], or 'none' (default: {DEFAULT_POLARIZATION})")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output directory (created if missing)")
    p.set_defaults(func=run)


def _versions() -> dict[str, str]:
    import pyFAI

    from . import __version__

    return {"xrd_bluesky_version": __version__, "pyFAI_version": str(getattr(pyFAI, "version", "unknown"))}


def run(args: argparse.Namespace) -> int:
    """Integrate the files of ``args`` (see :func:`add_parser`) and write the patterns.

    Prints one line per frame: its name, the number of points written and the radial
    range with its unit.

    Returns
    -------
    int
        0.

    Raises
    ------
    ValueError
        Unknown radial unit (the parser refuses it before).
    GeometryError
        Missing or invalid PONI file.
    CorruptFrameError
        An unreadable, truncated or corrupt frame, dark, gain or mask file (named).
    ShapeMismatchError
        A frame, dark, gain or mask whose shape does not fit the PONI's detector (named).
    InvalidFrameError
        A frame whose every pixel is masked, non-finite or negative (named).
    SystemExit
        Two frames would write the same output file.
    """
    if args.unit not in UNITS:
        raise ValueError(f"unknown radial unit {args.unit!r}; use one of {sorted(UNITS)}")
    polarization = args.polarization
    if isinstance(polarization, str):  # a Namespace built by hand
        polarization = _polarization(polarization)
    stems = [Path(f).stem for f in args.frames]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise SystemExit(f"xrd-bluesky integrate: several input files share the name {', '.join(duplicates)}; "
                         "their outputs would overwrite each other")

    poni = Poni.read(args.poni)
    bad: list[np.ndarray] = []  # static masks, True = bad
    dark = flat = None
    if args.dark:
        dark = _read_one(args.dark, "dark", poni, average=True)
        bad.append(~np.isfinite(dark))
        dark = np.where(np.isfinite(dark), dark, 0.0).astype(np.float32)
    if args.gain:
        flat, gain_bad = read_gain(args.gain, poni)
        bad.append(gain_bad)
    if args.mask:
        bad.append(_read_one(args.mask, "mask", poni) != 0)
    static = np.logical_or.reduce(bad) if bad else None

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    header_common = {
        "poni": args.poni, "dark": args.dark, "gain": args.gain, "mask": args.mask,
        "polarization_factor": polarization, "npt": args.npt, **_versions(),
    }
    written: set[str] = set()
    for path in args.frames:
        for name, frame in read_frames(path):
            if name in written:
                raise SystemExit(f"xrd-bluesky integrate: frame {name} of {path} would overwrite an earlier output")
            written.add(name)
            source = str(path) if name == Path(path).stem else f"{path} frame {int(name.rsplit('_', 1)[1])}"
            result = integrate_1d(frame, poni, npt=args.npt, unit=args.unit, dark=dark, flat=flat,
                                  mask=static, polarization_factor=polarization, source=source)
            n = write_xye(out / f"{name}.xye", result, {"source": source, **header_common},
                          wavelength_m=poni.wavelength)
            write_chi(out / f"{name}.chi", result, name)
            radial = result.radial[np.isfinite(result.intensity) & np.isfinite(result.sigma)]
            span = f"{radial.min():.5g} to {radial.max():.5g}" if n else "empty"
            print(f"{name}: {n} points, {result.unit} {span} {result.radial_units} -> {out / name}.xye, .chi")
    return 0
