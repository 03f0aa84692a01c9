"""``xrd-bluesky pdf``: S(Q), F(Q) and G(r) of pattern files, as PDFgetX3 makes them.

Each pattern (a text file of columns radial, intensity as ``fit-peaks`` reads them:
``.chi``, ``.xy``, ``.xye``, ``.dat``) is reduced with
:func:`~xrd_bluesky.science.pdf.pair_distribution.pdf_from_pattern` and written as
``DIR/<stem>.sq``, ``.fq`` and ``.gr``: two columns (Q in 1/A and S, or F in 1/A; r in
A and G in 1/A^2) after a ``#`` header that names every parameter, the version, the
input and what was repaired in it, laid out as PDFgetX3's (``#### start data``, ``#S 1``,
``#L`` column labels) so that diffpy's readers take them. The parameters come from a
``pdfgetx3.cfg`` (:mod:`xrd_bluesky.sources.pdfgetx3_config`), each option overriding
the file. Every pattern is read and reduced before any file is written; a repair (a
spike replaced) is a warning naming the Q.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .. import __version__
from ..errors import OutputError, PlausibilityWarning, UsageError, XRDBlueskyError
from ..outputs import check_writable
from ..science.geometry import WAVELENGTH_RANGE_A
from ..science.pdf.pair_distribution import (
    DATA_FORMATS,
    PDFConfig,
    PDFResult,
    pdf_from_pattern,
    peak_positions,
)
from ..science.reduction.integration import UNITS
from ..sources.pdfgetx3_config import MODE, PDFgetX3Config, read_pdfgetx3_config
from ..store.pattern_files import write_pdfgetx3_columns
from .fit_peaks import Pattern, read_pattern
from .options import number_in

#: Radial unit (as pattern files name it) of each PDFgetX3 data format.
FORMAT_UNITS = {"twotheta": "2th_deg", "QA": "q_A^-1", "Qnm": "q_nm^-1"}
#: Output suffix: (abscissa, ordinate) of the PDFResult and PDFgetX3's ``#L`` column labels.
OUTPUTS = {"sq": ("q", "sq"), "fq": ("q", "fq"), "gr": ("r", "gr")}
#: Options that override the configuration file's parameters of the same name, with their unit.
NUMBER_OPTIONS = {"qmin": "1/A", "qmax": "1/A", "qmaxinst": "1/A", "rpoly": "A", "rmin": "A", "rmax": "A",
                  "rstep": "A"}


def add_parser(subparsers) -> None:
    """Add the ``pdf`` subcommand."""
    p = subparsers.add_parser("pdf", help="S(Q), F(Q) and G(r) of pattern files (.chi/.xy/.xye/.dat), as PDFgetX3")
    p.add_argument("patterns", nargs="*",
                   help="patterns: radial, intensity[, sigma] (default: the configuration's inputfile)")
    p.add_argument("--config", metavar="CFG", help="a pdfgetx3.cfg whose parameters the options below override")
    p.add_argument("--section", metavar="NAME", help="custom section of --config (default: [DEFAULT])")
    p.add_argument("--composition", metavar="FORMULA", help="chemical formula of the sample, e.g. Ni or SiO2")
    p.add_argument("--background", metavar="FILE", help="background pattern (empty container, air) to subtract")
    p.add_argument("--bgscale", type=number_in(0.0, 1e6, "times the background"),
                   help="scale of the background (default 1)")
    p.add_argument("--format", dest="dataformat", choices=DATA_FORMATS,
                   help="abscissa of the files: 2theta (deg), Q (1/A) or Q (1/nm) (default: QA)")
    p.add_argument("--wavelength-A", dest="wavelength_A", type=number_in(*WAVELENGTH_RANGE_A, "A"),
                   help="X-ray wavelength (A), for --format twotheta")
    for name, unit in NUMBER_OPTIONS.items():
        p.add_argument(f"--{name}", type=number_in(0.0, 1000.0, unit), help=f"{name} ({unit}), as in PDFgetX3")
    p.add_argument("--lorch", action="store_true", default=None, help="Lorch window on F(Q) (not in PDFgetX3)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder of the .sq, .fq and .gr files (created if its parent exists)")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> tuple[PDFgetX3Config, PDFConfig]:
    """The configuration file's section and the PDFConfig of it with the options over it."""
    if args.section and not args.config:
        raise UsageError(f"--section {args.section} needs --config (the pdfgetx3.cfg it is a section of)")
    cfg = read_pdfgetx3_config(args.config, args.section) if args.config else PDFgetX3Config()
    config = cfg.pdf_config(composition=args.composition, dataformat=args.dataformat, wavelength=args.wavelength_A,
                            bgscale=args.bgscale, backgroundfile=args.background, lorch=args.lorch,
                            **{name: getattr(args, name) for name in NUMBER_OPTIONS})
    if args.bgscale is not None and not config.backgroundfile:
        raise UsageError(f"--bgscale {args.bgscale:g} but no background: give --background FILE"
                         + (f" or 'backgroundfile' in {cfg.path}" if cfg.path else ""))
    return cfg, config


def _read(path: str | Path, config: PDFConfig, role: str) -> Pattern:
    """A pattern file, refused when it names a radial unit other than the data format's."""
    pattern = read_pattern(path)
    named = pattern.unit.split(" ", 1)[0]
    if named in UNITS and named != FORMAT_UNITS[config.dataformat]:
        right = next(f for f, unit in FORMAT_UNITS.items() if unit == named)
        raise UsageError(f"{role} {path} is in {pattern.unit} but the data format is {config.dataformat}: "
                         f"give --format {right}" + (" and --wavelength-A" if right == "twotheta" else ""))
    return pattern


def _outputs(directory: str, patterns: list[str]) -> list[dict[str, Path]]:
    """Per pattern, its output file by suffix, checked writable; refuses two patterns of one stem."""
    folder = Path(directory)
    if not folder.parent.is_dir():
        raise OutputError(f"cannot create output directory {folder}: folder {folder.parent} does not exist")
    check_writable(folder, directory=True)
    stems: dict[str, str] = {}
    for path in patterns:
        other = stems.setdefault(Path(path).stem, path)
        if other != path or patterns.count(path) > 1:
            raise UsageError(f"patterns {other} and {path} would both be written as {folder / Path(path).stem}.gr: "
                             "give each pattern once, with distinct names")
    return [{suffix: check_writable(folder / f"{Path(path).stem}.{suffix}") for suffix in OUTPUTS}
            for path in patterns]


def _reduce(path: str, pattern: Pattern, config: PDFConfig, background: Pattern | None) -> PDFResult:
    """The PDF of one pattern; an input error names the file, a repair is a warning."""
    try:
        result = pdf_from_pattern(pattern.radial, pattern.intensity, config,
                                  background=(background.radial, background.intensity) if background else None)
    except XRDBlueskyError as exc:
        raise type(exc)(f"pattern {path}: {exc}") from exc
    for flag in result.flags:
        warnings.warn(f"pattern {path}: {flag}", PlausibilityWarning, stacklevel=2)
    return result


def first_peak_A(result: PDFResult) -> float | None:
    """Position (A) of the first peak of G(r) beyond ``rpoly``: the first local maximum at
    least half as high as the highest there (None if there is none)."""
    beyond = result.r > result.config.rpoly
    g = result.gr[beyond]
    if g.size < 3 or g.max() <= 0:
        return None
    peaks = peak_positions(result.r[beyond], g, min_height=0.5 * g.max())
    return float(peaks[0]) if peaks.size else None


def _header(path: str, cfg: PDFgetX3Config, result: PDFResult, what: str) -> list[str]:
    """``#`` header lines: the program, the input, every parameter used, the repairs."""
    config = result.config.as_dict()
    config["backgroundfile"] = str(Path(config["backgroundfile"]).resolve()) if config["backgroundfile"] else ""
    values = {"version": f"xrd-bluesky {__version__}", "inputfile": str(Path(path).resolve()),
              "configfile": f"{cfg.path.resolve()} [{cfg.section}]" if cfg.path else "", "mode": MODE,
              **config, "polynomial_degree": result.polynomial_degree, "scale": f"{result.scale:.8g}"}
    lines = [f"# xrd-bluesky pdf: {what} (PDFgetX3's ad hoc method)"]
    lines += [f"# {key} = {'' if value is None else value}".rstrip() for key, value in values.items()]
    lines += [f"# flag = {flag}" for flag in result.flags] or ["# flag = none"]
    return lines


def _write(files: dict[str, Path], path: str, cfg: PDFgetX3Config, result: PDFResult) -> None:
    """Write the .sq, .fq and .gr files of ``result`` and verify them."""
    for suffix, (x_name, y_name) in OUTPUTS.items():
        header = _header(path, cfg, result, {"sq": "S(Q)", "fq": "F(Q)", "gr": "G(r)"}[suffix])
        write_pdfgetx3_columns(files[suffix], header, suffix, getattr(result, x_name), getattr(result, y_name))


def run(args: argparse.Namespace) -> int:
    """Reduce every pattern and write its .sq, .fq and .gr files; print a line per pattern.

    Returns
    -------
    int
        0 (every error is raised).

    Raises
    ------
    XRDBlueskyError
        Before any file is written: the configuration or an option is unusable, a
        pattern or the background cannot be read or is implausible (each named).
    """
    cfg, config = _config(args)
    paths = [str(p) for p in (args.patterns or cfg.inputs)]
    if not paths:
        raise UsageError("no patterns: give them on the command line"
                         + (f" or as 'inputfile' in {cfg.path} [{cfg.section}]" if cfg.path else ""))
    outputs = _outputs(args.output, paths)
    background = _read(config.backgroundfile, config, "background") if config.backgroundfile else None
    patterns = [_read(path, config, "pattern") for path in paths]
    results = [_reduce(path, pattern, config, background) for path, pattern in zip(paths, patterns)]
    for path, files, result in zip(paths, outputs, results):
        _write(files, path, cfg, result)
        peak = first_peak_A(result)
        used = result.config
        print(f"{path}: {used.composition}, Q {max(used.qmin, float(result.q[0])):.3f}-{used.qmax:g} 1/A "
              f"(qmaxinst {used.qmaxinst:g} 1/A), polynomial degree {result.polynomial_degree}, first G(r) peak "
              + (f"at {peak:.3f} A" if peak is not None else "not found (G is not positive beyond rpoly)"))
        print(f"written {', '.join(str(f) for f in files.values())}")
    return 0
