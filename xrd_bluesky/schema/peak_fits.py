"""The peak fits' contract: their parameters (the ``peaks`` configuration a measurement
run names, recorded with its defaults filled in) and their derived streams and keys.

Streams, one event per integration event, keys per peak label ``L`` (``L_SUFFIX``):
``primary`` (fits of the 2theta pattern: :data:`SUFFIX_UNITS`, ``L_eta``, ``L_chi2r``,
``L_success``, ``L_reason``) and ``sectors`` (fits of every cake sector, arrays over
``azimuth``, and the strain along and across the load). Each stream's configuration
``peaks`` records per peak its window (``L_window_low``, ``L_window_high``, deg) and d0
(``L_d0``, ``L_d0_sigma``, A; ``L_d0_source``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ANALYSIS = "peak_fits"
SECTORS_STREAM = "sectors"
#: Suffixes of a peak's d-spacing (A) and its 1-sigma error.
D_SUFFIX, D_SIGMA_SUFFIX = "_d", "_d_sigma"
#: Units of the per-peak keys by suffix; ``{I}`` is the pattern's intensity unit, ``{x}`` its radial unit.
SUFFIX_UNITS = {"centre_2theta": "deg", "centre_2theta_sigma": "deg", "fwhm_2theta": "deg",
                "fwhm_2theta_sigma": "deg", "centre_q": "1/nm", "centre_q_sigma": "1/nm", "fwhm_q": "1/nm",
                "fwhm_q_sigma": "1/nm", "height": "{I}", "height_sigma": "{I}", "area": "{I}*{x}",
                "area_sigma": "{I}*{x}", "background": "{I}", "d": "A", "d_sigma": "A", "strain": "",
                "strain_sigma": "", "strain_loading": "", "strain_loading_sigma": "", "strain_transverse": "",
                "strain_transverse_sigma": ""}
#: Units of the per-peak configuration keys by suffix.
CONFIGURATION_UNITS = {"window_low": "deg", "window_high": "deg", "d0": "A", "d0_sigma": "A"}


@dataclass(frozen=True)
class PeakFitParameters:
    """What the peaks were fitted with: the run's ``peaks`` configuration (see
    :mod:`xrd_bluesky.science.reduction.peak_specs`), its ``model`` and
    ``background`` filled in.

    Attributes
    ----------
    peaks : mapping
        The configuration.
    """

    peaks: Mapping = field(default_factory=dict)

    @classmethod
    def configured(cls, config: Mapping) -> PeakFitParameters:
        """The parameters of a run's ``peaks`` configuration (defaults filled in)."""
        return cls({**config, "model": config.get("model", "gaussian"),
                    "background": config.get("background", "constant")})

    @property
    def model(self) -> str:
        """The peak shape."""
        return self.peaks["model"]

    @property
    def background(self) -> str:
        """The background under a peak."""
        return self.peaks["background"]

    @property
    def auto(self) -> int:
        """How many peaks to find when none is named."""
        return int(self.peaks.get("auto", 0))

    @property
    def loading_azimuth_deg(self) -> float:
        """Azimuth (deg) of the load."""
        return float(self.peaks.get("loading_azimuth_deg", 0.0))

    @property
    def d0_A(self) -> Mapping:
        """d0 (A) given per peak label."""
        return self.peaks.get("d0_A", {})

    @property
    def d0_uid(self) -> str | None:
        """The raw run whose fits give d0."""
        return self.peaks.get("d0_uid")

    def as_dict(self) -> dict:
        """The parameters as the derived run's start document records them."""
        return dict(self.peaks)

    @classmethod
    def from_dict(cls, data: Mapping) -> PeakFitParameters:
        """Inverse of :meth:`as_dict`."""
        return cls.configured(data)
