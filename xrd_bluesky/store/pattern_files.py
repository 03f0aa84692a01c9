"""Writers of the text files that other programs read: ``.xye`` and Fit2D ``.chi``
patterns (GSAS-II, Rietveld programs), PDFgetX3's two-column ``.sq``/``.fq``/``.gr``
(diffpy), and the versions that every header names.

Used by the file commands (``xrd-bluesky integrate``, ``pdf``) and by the file sink of
derived runs (:mod:`xrd_bluesky.store.file_export`). Every file is written through a
temporary file and renamed, so that a reader never sees half of one.

Compatibility with GSAS-II's ``.xye``/``.chi`` importer (``G2pwd_xye``), which guesses
the x axis from the header: in an ``.xye`` file, the first ``#`` line that contains a
lowercase ``q`` makes GSAS-II read the x column as q and take the line's second word as
the wavelength. 2-theta files therefore have no lowercase ``q`` in their own header
text, and q files start with the line ``# <wavelength> wavelength in nm`` (``A`` for
``q_A^-1``), in the length unit inverse to the q unit. GSAS-II imports only 2-theta
``.chi`` files.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import OutputError
from ..outputs import verify_written
from ..science.reduction.integration import IntegrationResult

#: Fit2D's radial-axis labels of a .chi file, per pyFAI unit name. Fit2D writes
#: "Q (Inverse Nanometres)" for its q scans; it has no 1/A scan, the label follows suit.
CHI_LABELS = {
    "2th_deg": "2-Theta Angle (Degrees)",
    "q_nm^-1": "Q (Inverse Nanometres)",
    "q_A^-1": "Q (Inverse Angstroms)",
}

#: Wavelength unit inverse to each q unit, with its factor from metres (GSAS-II line).
_WAVELENGTH_UNIT = {"q_nm^-1": ("nm", 1e9), "q_A^-1": ("A", 1e10)}

#: Intensity line of the ``.xye`` header: patterns of the live integration
#: (:class:`~xrd_bluesky.callbacks.integration.LiveIntegration`) and their absolute scale.
STERADIAN_INTENSITY = "counts per steradian (absolute solid angle)"
ABSOLUTE_INTENSITY = "1/cm/sr (absolute differential cross-section per volume)"

#: PDFgetX3's ``#L`` column labels of each output: S(Q), F(Q), G(r).
PDF_LABELS = {"sq": "Q(Å$^{-1}$)  S", "fq": "Q(Å$^{-1}$)  F(Å$^{-1}$)", "gr": "r(Å)  G(Å$^{-2}$)"}


def software_versions() -> dict[str, str]:
    """The versions of xrd-bluesky and pyFAI, as headers name them."""
    import pyFAI

    return {"xrd_bluesky_version": __version__, "pyFAI_version": str(getattr(pyFAI, "version", "unknown"))}


def one_line(value) -> str:
    """``value`` as text on one line (``none`` for None): line breaks become spaces."""
    return "none" if value is None else str(value).replace("\r", " ").replace("\n", " ")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file, so that a reader
    never sees half a file.

    Raises
    ------
    OutputError
        The file cannot be written (the path named).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def write_csv(path: str | Path, columns: Sequence[str], rows: list[dict], header: Mapping | None = None) -> Path:
    """Write ``rows`` as a CSV table with ``columns``, after ``# key: value`` lines of
    ``header``, through :func:`write_text`, and verify the file is there.

    Raises
    ------
    OutputError
        The file cannot be written, or is not there afterwards.
    """
    text = io.StringIO()
    for key, value in (header or {}).items():
        text.write(f"# {key}: {value}\n")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())
    verify_written(path)
    return Path(path)


def _finite_rows(result: IntegrationResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Radial, intensity and sigma of the bins with a finite intensity and sigma, and
    the number of bins left out."""
    radial = np.asarray(result.radial, dtype=float)
    intensity = np.asarray(result.intensity, dtype=float)
    sigma = np.asarray(result.sigma, dtype=float)
    keep = np.isfinite(radial) & np.isfinite(intensity) & np.isfinite(sigma)
    return radial[keep], intensity[keep], sigma[keep], int(keep.size - keep.sum())


def write_xye(path: str | Path, result: IntegrationResult, header: dict, *,
              wavelength_m: float | None = None, intensity_label: str = STERADIAN_INTENSITY) -> int:
    """Write a pattern as a three-column ``.xye`` file (radial, intensity, sigma).

    Parameters
    ----------
    path : str or Path
        Output file.
    result : IntegrationResult
        The pattern.
    header : dict
        Written as ``# key: value`` comment lines (newlines in values become spaces).
    wavelength_m : float, optional
        Wavelength (m). For q patterns it is written first, in the length unit inverse
        to the q unit, as ``# <value> wavelength in nm`` (or ``A``): GSAS-II reads it to
        convert q to 2-theta.
    intensity_label : str
        What the intensity is (its unit and normalisation), for the header.

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
        f"# intensity: {intensity_label}, sigma: 1 s.d. (Poisson model)",
        f"# omitted: {omitted} of {np.size(result.radial)} bins had no valid pixel (NaN) and are left out; "
        "Rietveld programs reject NaN",
    ]
    lines += [f"# {one_line(key)}: {one_line(value)}" for key, value in header.items()]
    lines.append(f"# {result.unit}  I  sigma")
    rows = [f"{x:.7e}  {y:.7e}  {s:.7e}" for x, y, s in zip(radial, intensity, sigma)]
    write_text(path, "\n".join(lines + rows) + "\n")
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
        The pattern.
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
    lines = [one_line(title), CHI_LABELS[result.unit], "Intensity", f"       {len(radial)}"]
    lines += [f" {x:.7e}   {y:.7e}" for x, y in zip(radial, intensity)]
    write_text(path, "\n".join(lines) + "\n")
    return len(radial)


def write_pdfgetx3_columns(path: str | Path, header: list[str], kind: str, x: np.ndarray, y: np.ndarray) -> Path:
    """Write S(Q), F(Q) or G(r) as PDFgetX3 does, so that diffpy's readers take it.

    Parameters
    ----------
    path : str or Path
        Output file (``.sq``, ``.fq``, ``.gr``).
    header : list of str
        ``#`` comment lines before the data block.
    kind : str
        ``sq``, ``fq`` or ``gr``: the ``#L`` column labels (:data:`PDF_LABELS`).
    x, y : ndarray
        Q (1/A) and S or F (1/A), or r (A) and G (1/A^2).

    Raises
    ------
    OutputError
        The file cannot be written or was not written (the path named).
    """
    lines = [*header, "", "#### start data", "#S 1", f"#L {PDF_LABELS[kind]}"]
    columns = np.column_stack([np.asarray(x, float), np.asarray(y, float)]) + 0.0  # -0 written as 0
    rows = [f"{a:.10g} {b:.10g}" for a, b in columns]
    return verify_written(write_text(path, "\n".join(lines + rows) + "\n"))
