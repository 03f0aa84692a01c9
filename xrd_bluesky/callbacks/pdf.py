"""Live pair distribution functions of an integration run's patterns.

The raw run's start document asks for them with a ``pdf`` configuration (PDFgetX3's
parameter names, see :class:`~xrd_bluesky.science.pdf.pair_distribution.PDFConfig`)::

    md={"pdf": {"rpoly": 0.9, "qmax": 24.0, "rmax": 30.0, "background_uid": "<raw run uid>", "bgscale": 1.0}}

``composition`` defaults to the sample metadata's. The integration copies the
configuration into its derived run, and this analysis turns that run into one of its
own (``analysis: "pdf"``, ``parent_uids``: the integration run).

Without a background, the patterns in counts/sr are used (``primary``, ``stitched``);
with ``background_uid`` (a raw run in the catalog, e.g. the empty capillary), the
patterns on the absolute scale (``absolute``, ``stitched_absolute``) minus ``bgscale``
times the background's stored absolute pattern scaled by its thickness over the
sample's (as the integration's own background subtraction does), so that both are per
incident photon through the sample.

Derived-run streams, one event per pattern (per frame, and per stitched pattern, its
``final`` flag copied):

``sq``, ``fq``, ``gr``    of each frame: ``q`` (1/A) with ``sq`` and ``fq`` (1/A), ``r``
                          (A) with ``gr`` (1/A^2);
``stitched_sq`` ...       the same for the stitched pattern;
``rejected``              a pattern whose PDF could not be computed (the reason);
every event also carries ``parent_seq_num``, ``polynomial_degree``, ``scale`` and
``flags`` (input repairs, e.g. a spike replaced, naming the Q, and saturated pixels left
out of the frames, which make the strongest rings too weak; "" when none).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import AnalysisError, MissingMetadataError, XRDBlueskyError
from ..schema import integration
from ..schema.integration import REJECTED_STREAM
from ..schema.pdf import STITCHED_PREFIX, UNITS, PDFParameters
from ..schema.start import PDF, PRIMARY_STREAM, SAMPLE, require
from ..science.pdf.pair_distribution import PDFResult, pdf_from_pattern
from .derived import DerivedRunCallback, Emit
from .integration import References

logger = logging.getLogger(__name__)

#: Pattern streams of an integration run: (counts/sr, absolute) by kind.
PATTERN_STREAMS = {"frame": (PRIMARY_STREAM, integration.ABSOLUTE_STREAM),
                   "stitched": (integration.STITCHED_STREAM, integration.STITCHED_ABSOLUTE_STREAM)}
#: The intensity key of a pattern stream, when not ``intensity``.
INTENSITY_KEYS = {PRIMARY_STREAM: "intensity_q"}


class LivePDF(DerivedRunCallback):
    """Compute S(Q), F(Q) and G(r) of every pattern of an integration run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    references : callable, optional
        Looks up a raw run's stored absolute pattern by uid (for ``background_uid``).
    provenance : dict, optional
        Extra start-document keys of the derived run.
    """

    analysis = "pdf"

    def __init__(self, emit: Emit, *, references: References | None = None, provenance: dict | None = None):
        super().__init__(emit, provenance=provenance)
        self.references = references
        self._descriptors: dict[str, tuple[str, str]] = {}  # uid: (kind, stream)
        self._computed = 0
        self._rejected: list[str] = []
        self._saturated: dict[int, int] = {}  # parent event: saturated pixels of its frames
        self._primary: str | None = None  # the integration's per-frame descriptor

    def start(self, doc):
        require(doc, (PDF,), "integration run")
        self.parameters = PDFParameters.configured(doc[PDF], doc.get(SAMPLE) or {})
        self.config = self.parameters.config
        self._background = None
        background_uid = self.parameters.background_uid
        if background_uid is not None:
            if self.references is None:
                raise MissingMetadataError(f"pdf names background_uid={background_uid!r} but no catalog is available")
            thickness_mm = (doc.get(SAMPLE) or {}).get("thickness_mm")
            if not thickness_mm:
                raise MissingMetadataError("a pdf background needs the sample's thickness_mm: both patterns are on "
                                           "the absolute scale, per unit thickness")
            reference = self.references(background_uid)
            # per incident photon through this sample: the background's pattern times its thickness over ours
            self._background = (np.asarray(reference.pattern.radial) / 10.0,
                                np.asarray(reference.pattern.intensity) * reference.thickness_mm / float(thickness_mm))
        self._absolute = self.parameters.absolute
        self.open_derived(doc, self.parameters.as_dict(), background_uid=background_uid)

    def descriptor(self, doc):
        if doc["name"] == PRIMARY_STREAM:
            self._primary = doc["uid"]
        for kind, streams in PATTERN_STREAMS.items():
            if doc["name"] == streams[self._absolute]:
                self._descriptors[doc["uid"]] = kind, doc["name"]

    def event(self, doc):
        if doc["descriptor"] == self._primary:
            self._saturated[int(doc["data"]["parent_seq_num"])] = int(doc["data"].get("saturated_pixels", 0))
        if doc["descriptor"] not in self._descriptors:
            return
        kind, stream = self._descriptors[doc["descriptor"]]
        data = doc["data"]
        q_nm = np.asarray(data["q"], dtype=float)
        intensity = np.asarray(data[INTENSITY_KEYS.get(stream, "intensity")], dtype=float)
        seq = int(data.get("parent_seq_num", doc["seq_num"]))
        try:
            result = pdf_from_pattern(q_nm / 10.0, intensity, self.config, self._background)
        except XRDBlueskyError as exc:  # one pattern's failure flags it; the run goes on
            reason = f"{kind} pattern {seq}: {exc}"
            logger.warning("PDF not computed: %s", reason)
            self._rejected.append(reason)
            self.emit_event(REJECTED_STREAM, {"reason": reason, "parent_seq_num": seq}, {})
            return
        self._computed += 1
        extra = {"parent_seq_num": seq, **({"final": bool(data["final"])} if "final" in data else {})}
        self._emit_result("" if kind == "frame" else STITCHED_PREFIX, result, extra, self._saturation(kind, seq))

    def _saturation(self, kind: str, seq: int) -> tuple[str, ...]:
        """A flag when saturated pixels were left out of the pattern's frames."""
        saturated = self._saturated.get(seq, 0) if kind == "frame" else sum(self._saturated.values())
        if not saturated:
            return ()
        frames = f"frame {seq}" if kind == "frame" else "the stitched frames"
        return (f"{saturated} saturated pixels left out of {frames}: the strongest rings are underestimated and "
                "G(r) distorted; lower the flux or the exposure",)

    def finish(self, parent_stop):
        if not self._computed:
            why = self._rejected[0] if self._rejected else "the integration run has no patterns"
            raise AnalysisError(f"no PDF computed ({why})")

    def _emit_result(self, prefix: str, result: PDFResult, extra: dict, flags: tuple[str, ...]) -> None:
        flags = result.flags + flags
        if flags:
            logger.warning("PDF of %spattern %s flagged: %s", prefix, extra["parent_seq_num"], "; ".join(flags))
        common = {**extra, "polynomial_degree": result.polynomial_degree, "scale": result.scale,
                  "flags": "; ".join(flags)}
        self.emit_event(f"{prefix}sq", {"q": result.q, "sq": result.sq, **common}, UNITS)
        self.emit_event(f"{prefix}fq", {"q": result.q, "fq": result.fq, **common}, UNITS)
        self.emit_event(f"{prefix}gr", {"r": result.r, "gr": result.gr, **common}, UNITS)
