"""Domain exceptions of xrd-bluesky.

Every error raised on bad input derives from :class:`XRDBlueskyError` and names the
file, key or value at fault, so that a scientist at the beamline can act on it.
"""


class XRDBlueskyError(Exception):
    """Base class of all domain errors: a command reports one with exit status 2 (the
    input or the usage is at fault) unless it is an :class:`AnalysisError`."""


class AnalysisError(XRDBlueskyError):
    """The inputs were usable but the analysis did not succeed (a command exits with
    status 1)."""


class UsageError(XRDBlueskyError, ValueError):
    """A command's options are missing, contradict each other or are out of range."""


class ImplausibleInputError(XRDBlueskyError, ValueError):
    """An input is readable but physically implausible (a length in the wrong unit, a
    dark brighter than the frame, a gain map in counts...): the message names the
    value and the plausible range."""


class AmbiguousInputError(XRDBlueskyError, ValueError):
    """An input fits more than one interpretation about equally well (another
    calibrant, another energy, another CIF origin choice): the message names them."""


class ResourceLimitError(XRDBlueskyError, MemoryError):
    """An input would need more memory (or bins, or frames) than the machine has: the
    sizes are named, before anything is allocated."""


class OutputError(XRDBlueskyError, OSError):
    """An output file cannot be written, or was not written: the path is named."""


class PlausibilityWarning(UserWarning):
    """An input is unusual but may be right (a large masked fraction...): the message
    names the value and the plausible range; commands print it."""


class GeometryError(XRDBlueskyError, ValueError):
    """A detector geometry or model, or the binning asked of it, is non-physical or
    empty (distance, wavelength, pixel size, counter depth, radial range, number of
    bins...)."""


class CorruptFrameError(XRDBlueskyError, OSError):
    """A frame file cannot be read or is truncated."""


class ShapeMismatchError(XRDBlueskyError, ValueError):
    """An array does not have the shape (or the numeric element type) the detector
    model requires."""


class InvalidFrameError(XRDBlueskyError, ValueError):
    """A frame holds no usable pixel: every pixel it puts into the integration is
    masked, non-finite, negative or saturated."""


class MissingMetadataError(XRDBlueskyError, KeyError):
    """A metadata key that an analysis needs is absent, or its value is unusable
    (wrong type, non-finite, out of range)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MonitorError(XRDBlueskyError, ValueError):
    """An ion-chamber or other monitor value is non-physical (zero, negative, NaN)."""


class CalibrationError(AnalysisError, RuntimeError):
    """Geometry calibration failed (rings not found, divergence, large residual)."""


class FitError(AnalysisError, RuntimeError):
    """A peak or model fit did not converge."""


class SampleError(XRDBlueskyError, KeyError):
    """A sample is not known to the sample library or its description is invalid."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BeamlineDescriptionError(XRDBlueskyError, ValueError):
    """A beamline description file is missing, is not TOML, or holds an unknown key or
    an unusable value (the file, the key and the value are named)."""


class FrameSourceError(XRDBlueskyError, OSError):
    """A document's reference to detector frames cannot be resolved: unknown resource
    spec, a file outside every storage root, a datum never announced."""


class UnsafePathError(XRDBlueskyError, ValueError):
    """A file name or path taken from metadata or a user would leave the directory it
    must stay in (a path where one name was expected, ``..``, a link outside)."""


class CredentialsError(XRDBlueskyError, PermissionError):
    """A secret the server or client needs (a Tiled API key) is absent from the
    environment; the variable to set is named."""


class DeviceError(XRDBlueskyError, TypeError):
    """A device lacks what a plan needs of it (a signal, a motor of its mount, a monitor
    reading): the device and what it lacks are named."""


class NothingAnalysedError(AnalysisError):
    """A run ended without a single frame analysed: its derived run says why, never
    ``success``."""


class RunNotFoundError(XRDBlueskyError, LookupError):
    """No run of the catalog has the uid asked for, or none matches a search: the uid or
    the search and the catalog are named."""
