"""Domain exceptions of xrd-bluesky.

Every error raised on bad input derives from :class:`XRDBlueskyError` and names the
file, key or value at fault, so that a scientist at the beamline can act on it.
"""


class XRDBlueskyError(Exception):
    """Base class of all domain errors."""


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


class CalibrationError(XRDBlueskyError, RuntimeError):
    """Geometry calibration failed (rings not found, divergence, large residual)."""


class FitError(XRDBlueskyError, RuntimeError):
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
