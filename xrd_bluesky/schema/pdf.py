"""The pair distribution functions' contract: their parameters (the ``pdf``
configuration a measurement run names: PDFgetX3's parameters and a background run) and
their derived streams and units.

Streams, one event per pattern: ``sq``, ``fq``, ``gr`` of each frame and
``stitched_sq``, ``stitched_fq``, ``stitched_gr`` of each stitched pattern, ``rejected``
for a pattern whose PDF could not be computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import MissingMetadataError
from ..science.pdf.pair_distribution import PDFConfig
from .start import BACKGROUND_UID

ANALYSIS = "pdf"
#: Prefix of the streams of stitched patterns.
STITCHED_PREFIX = "stitched_"
#: Units of the derived data keys.
UNITS = {"q": "1/A", "sq": "", "fq": "1/A", "r": "A", "gr": "1/A^2", "scale": "", "polynomial_degree": ""}
#: The ``pdf`` configuration's keys besides PDFConfig's own that the live analysis takes.
LIVE_KEYS = {BACKGROUND_UID}
#: PDFConfig parameters that make no sense live (the patterns are always Q in 1/nm).
FILE_ONLY = {"dataformat", "wavelength", "twothetazero", "backgroundfile"}
#: What ``patterns`` records: the patterns are on the absolute scale (a background is subtracted) or not.
PATTERNS = {True: "absolute (1/cm/sr)", False: "counts/sr"}


@dataclass(frozen=True)
class PDFParameters:
    """What the PDFs were computed with.

    Attributes
    ----------
    config : PDFConfig
        PDFgetX3's parameters (the composition filled in from the sample's).
    background_uid : str or None
        The raw run whose stored absolute pattern is subtracted (then the patterns on
        the absolute scale are used); None: the patterns in counts/sr.
    """

    config: PDFConfig
    background_uid: str | None = None

    @property
    def absolute(self) -> bool:
        """Whether the patterns on the absolute scale are used (a background is subtracted)."""
        return self.background_uid is not None

    @classmethod
    def configured(cls, options: object, sample: Mapping) -> PDFParameters:
        """The parameters of a run's ``pdf`` configuration, checked.

        Parameters
        ----------
        options : object
            The start document's ``pdf`` value.
        sample : mapping
            The run's sample (its ``composition`` is the default).

        Raises
        ------
        MissingMetadataError
            ``options`` is not a mapping, names an unknown parameter, or there is no
            composition.
        UsageError
            A parameter out of its range (:meth:`PDFConfig.checked`).
        """
        if not isinstance(options, dict):
            raise MissingMetadataError(f"start document 'pdf' is {options!r}; expected a mapping of PDFgetX3 "
                                       "parameters (composition, rpoly, qmax, rmax, ..., background_uid)")
        known = {f.name for f in fields(PDFConfig)} - FILE_ONLY
        unknown = set(options) - known - LIVE_KEYS
        if unknown:
            raise MissingMetadataError(f"unknown pdf parameters {sorted(unknown)}; known: {sorted(known | LIVE_KEYS)}")
        composition = options.get("composition") or sample.get("composition")
        if not composition:
            raise MissingMetadataError("no composition for the PDF: give pdf.composition or the sample's composition")
        params = {k: v for k, v in options.items() if k in known}
        return cls(PDFConfig(**{**params, "composition": composition}).checked(), options.get(BACKGROUND_UID))

    def as_dict(self) -> dict:
        """The parameters as the derived run's start document records them."""
        return {**self.config.as_dict(), BACKGROUND_UID: self.background_uid, "patterns": PATTERNS[self.absolute]}

    @classmethod
    def from_dict(cls, data: Mapping) -> PDFParameters:
        """Inverse of :meth:`as_dict`."""
        names = {f.name for f in fields(PDFConfig)}
        return cls(PDFConfig(**{k: v for k, v in data.items() if k in names}), data.get(BACKGROUND_UID))
