"""A user's ``pdfgetx3.cfg``, read as PDFgetX3 reads it, into the parameters of
:class:`~xrd_bluesky.science.pdf.pair_distribution.PDFConfig`.

The file is Python configparser text: a ``[DEFAULT]`` section and optional custom
sections that inherit from it (PDFgetX3's ``-s NAME``, our ``--section NAME``). Keys that
set the result are read (:data:`NUMBERS`, ``composition``, ``dataformat``, ``mode`` which
must be ``xray``), the files named (``inputfile``, one per line; ``backgroundfile``)
are looked for in the file's folder and then in each ``datapath`` folder (one per line,
relative to the file's folder), and keys that only steer PDFgetX3's own interface
(:data:`IGNORED`) are skipped. Any other key is an error naming it: it would change
PDFgetX3's result (or is misspelt), and a result that silently differs is worse than
none. PDFgetX3's search of ``~/.pdfgetx3.cfg`` and ``./pdfgetx3.cfg`` is not made: the
file is the one given.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..science.pdf.pair_distribution import DATA_FORMATS, PDFConfig

#: Numeric keys (PDFgetX3's names, PDFConfig's fields): wavelength (A), twothetazero (deg),
#: bgscale, rpoly (A), qmaxinst, qmin, qmax (1/A), rmin, rmax, rstep (A).
NUMBERS = ("wavelength", "twothetazero", "bgscale", "rpoly", "qmaxinst", "qmin", "qmax", "rmin", "rmax", "rstep")
#: Keys of PDFgetX3's own interface (output names, plots, prompts, logging): no effect on the result.
IGNORED = ("output", "outputtype", "force", "plot", "interact", "verbose")
#: The one ``mode`` (radiation) of PDFgetX3 that the reduction implements.
MODE = "xray"


@dataclass(frozen=True)
class PDFgetX3Config:
    """The parameters of one section of a ``pdfgetx3.cfg``.

    Parameters
    ----------
    path : Path, optional
        The file; None for no file (PDFgetX3's defaults).
    section : str
        The section read (``DEFAULT`` unless a custom one).
    parameters : dict
        PDFConfig keyword arguments the section sets; ``backgroundfile`` as a path
        resolved against the file's folder and ``datapath``.
    inputs : tuple of Path
        The section's ``inputfile`` patterns, resolved likewise.
    """

    path: Path | None = None
    section: str = configparser.DEFAULTSECT
    parameters: dict = field(default_factory=dict)
    inputs: tuple[Path, ...] = ()

    def pdf_config(self, **options) -> PDFConfig:
        """The PDFConfig of the section with ``options`` (PDFConfig fields; None: not
        given) over it, checked.

        Raises
        ------
        UsageError
            No composition in the section nor in ``options`` (the file and section named),
            or a parameter out of range.
        SampleError
            An unknown element or a malformed formula.
        """
        values = {**self.parameters, **{k: v for k, v in options.items() if v is not None}}
        if not values.get("composition"):
            where = (f"the configuration {self.path} [{self.section}] has no 'composition'" if self.path
                     else "no composition")
            raise UsageError(f"{where}: give the sample's formula with --composition (e.g. Ni, SiO2)"
                             + (" or 'composition = ...' in the file" if self.path else ""))
        return PDFConfig(**values).checked()


def read_pdfgetx3_config(path: str | Path, section: str | None = None) -> PDFgetX3Config:
    """Read a section of a PDFgetX3 configuration file.

    Parameters
    ----------
    path : str or Path
        A ``pdfgetx3.cfg``.
    section : str, optional
        A custom section (it inherits ``[DEFAULT]``); None for ``[DEFAULT]``.

    Returns
    -------
    PDFgetX3Config
        Its parameters (the composition may be missing: :meth:`PDFgetX3Config.pdf_config`
        then asks for it), background file and input files.

    Raises
    ------
    UsageError
        Naming the file, the section and the key: the file is missing or not a
        configuration file, the section does not exist, a number is not one, the data
        format or the mode is not one of ours, a key is unknown.
    """
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot read the PDFgetX3 configuration {path}: {reason}") from None
    except configparser.Error as exc:
        raise UsageError(f"{path} is not a PDFgetX3 configuration file (configparser text with a [DEFAULT] "
                         f"section): {exc.message.splitlines()[0]}") from None
    name = section or configparser.DEFAULTSECT
    if name != configparser.DEFAULTSECT and not parser.has_section(name):
        raise UsageError(f"the PDFgetX3 configuration {path} has no section [{name}]; its sections: "
                         + (", ".join(parser.sections()) or f"none but [{configparser.DEFAULTSECT}]"))
    values = {key: value.strip() for key, value in parser[name].items()}
    where = f"{path} [{name}]"
    unknown = sorted(set(values) - {*NUMBERS, *IGNORED, "composition", "dataformat", "mode", "inputfile",
                                    "backgroundfile", "datapath"})
    if unknown:
        raise UsageError(f"{where}: key(s) {', '.join(unknown)} not supported: they would change PDFgetX3's result "
                         f"(or are misspelt); supported: {', '.join(sorted((*NUMBERS, 'composition', 'dataformat')))}"
                         ", mode = xray, inputfile, backgroundfile, datapath")
    if values.get("mode", MODE).lower() not in ("", MODE):
        raise UsageError(f"{where}: mode = {values['mode']} is not supported: only X-ray PDFs (mode = xray) are "
                         "computed (neutron, electron and sas modes change the normalisation)")
    if values.get("dataformat") and values["dataformat"] not in DATA_FORMATS:
        raise UsageError(f"{where}: dataformat = {values['dataformat']}: use one of {', '.join(DATA_FORMATS)}")
    parameters: dict = {key: _number(values[key], key, where) for key in NUMBERS if values.get(key)}
    parameters.update({key: values[key] for key in ("composition", "dataformat") if values.get(key)})
    folders = [path.parent, *(path.parent / line for line in _lines(values.get("datapath", "")))]
    background = _lines(values.get("backgroundfile", ""))
    if len(background) > 1:
        raise UsageError(f"{where}: backgroundfile names {len(background)} files; give one")
    if background:
        parameters["backgroundfile"] = str(_located(background[0], folders))
    inputs = tuple(_located(line, folders) for line in _lines(values.get("inputfile", "")))
    return PDFgetX3Config(path, name, parameters, inputs)


def _number(text: str, key: str, where: str) -> float:
    """``text`` as a finite float, else a UsageError naming the key."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where}: {key} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{where}: {key} = {text!r} is not finite")
    return value


def _lines(text: str) -> list[str]:
    """The non-empty lines of a multi-line value."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _located(name: str, folders: list[Path]) -> Path:
    """``name`` in the first of ``folders`` that holds it (as given if absolute; in the
    first folder if none does, so that the error names it there)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    return next((folder / path for folder in folders if (folder / path).exists()), folders[0] / path)
