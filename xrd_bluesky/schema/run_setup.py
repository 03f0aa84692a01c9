"""Contracts between the beamline description and the analyses.

:class:`InstrumentSettings` is what an analysis takes from the beamline description
for one run (detector identity, saturation, mask, beamstop, polarization, monitors,
dark policy, where frames may be read); :class:`RunSetup` is a run as the router
hands it to an analysis: its start document completed from the description, those
settings and the nominal geometry. Keeping them here lets ``callbacks`` use the
description without importing ``beamline``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import GeometryError, MissingMetadataError, ShapeMismatchError
from ..science.calibration.position_models import ArmModel
from ..science.detector_pixels import Beamstop
from ..science.geometry import DetectorPositionModel, Poni
from ..science.reduction.monitors import AIR_TRANSMISSION, FluxCalibration


@dataclass(frozen=True)
class InstrumentSettings:
    """What an analysis needs to know of the instrument, beyond the geometry.

    Attributes
    ----------
    detector : str or None
        The description's name of the run's detector (None: undescribed).
    models : tuple of str
        Driver model strings that mean this detector (empty: not checked).
    saturation_counts : float or None
        Counter depth (counts), overriding the driver's ``max_count``.
    mask : ndarray or None
        Static mask, True = bad.
    mask_file : str or None
        The file the mask was read from (recorded, for replays).
    beamstop : Beamstop or None
        Masked around its shadow; None: there is none.
    polarization_factor : float or None
        pyFAI's polarization factor; None: not corrected.
    flux_calibration : FluxCalibration or None
        I0 counts to flux; None: no absolute scale.
    air_transmission : float
        Transmission of the air between the I0 and It chambers.
    dark : str
        Dark policy: ``if_present``, ``required`` or ``none``.
    frame_options : mapping
        Keywords of the frame registry (``roots``, ``spec_aliases``).
    """

    detector: str | None = None
    models: tuple[str, ...] = ()
    saturation_counts: float | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask_file: str | None = None
    beamstop: Beamstop | None = None
    polarization_factor: float | None = 0.99
    flux_calibration: FluxCalibration | None = FluxCalibration()
    air_transmission: float = AIR_TRANSMISSION
    dark: str = "if_present"
    frame_options: Mapping = field(default_factory=dict)

    def check_detector(self, poni: Poni, model: str | None, frame_shape: tuple[int, ...]) -> None:
        """Refuse frames that are not from the geometry's detector.

        Raises
        ------
        GeometryError
            The driver names a model the description does not list for this detector.
        ShapeMismatchError
            The frame's shape is not the detector's (pyFAI's shape, orientation applied).
        """
        if self.models and model and model not in self.models:
            raise GeometryError(f"frames come from a detector whose driver says model {model!r}; the beamline "
                                f"description lists {list(self.models)} for detector {self.detector!r}")
        shape = tuple(poni.detector_model().shape)
        if tuple(frame_shape) != shape:
            raise ShapeMismatchError(f"frames have shape {tuple(frame_shape)}, the geometry's detector "
                                     f"{poni.detector!r} has {shape}")

    def max_count(self, driver_max_count: float | None) -> float | None:
        """The counter depth: the description's, else the driver's."""
        return self.saturation_counts or driver_max_count

    def as_dict(self) -> dict:
        """What a derived run records of these settings."""
        return {"detector": self.detector, "models": list(self.models), "saturation_counts": self.saturation_counts,
                "mask_file": self.mask_file, "beamstop": self.beamstop.as_dict() if self.beamstop else None,
                "polarization_factor": self.polarization_factor,
                "flux_calibration": None if self.flux_calibration is None else
                {"slope": self.flux_calibration.slope, "offset": self.flux_calibration.offset},
                "air_transmission": self.air_transmission, "dark": self.dark}

    @classmethod
    def from_dict(cls, data: Mapping) -> InstrumentSettings:
        """Rebuild recorded settings (:meth:`as_dict`), reading the mask file again;
        frames are then read wherever the documents say (a replay's own storage).

        Raises
        ------
        MissingMetadataError
            The recorded mask file is gone or unreadable.
        """
        mask = None
        if data.get("mask_file"):
            import fabio

            try:
                mask = np.asarray(fabio.open(data["mask_file"]).data) != 0
            except Exception as exc:  # fabio raises many types on bad files
                raise MissingMetadataError(f"recorded mask file {data['mask_file']}: {exc}") from exc
        flux = data.get("flux_calibration")
        return cls(detector=data.get("detector"), models=tuple(data.get("models") or ()),
                   saturation_counts=data.get("saturation_counts"), mask=mask, mask_file=data.get("mask_file"),
                   beamstop=Beamstop(**data["beamstop"]) if data.get("beamstop") else None,
                   polarization_factor=data.get("polarization_factor"),
                   flux_calibration=None if flux is None else FluxCalibration(**flux),
                   air_transmission=data.get("air_transmission", AIR_TRANSMISSION), dark=data.get("dark", "if_present"))

    @classmethod
    def recorded(cls, parameters: Mapping) -> InstrumentSettings:
        """The settings an analysis recorded in its derived run's ``parameters``
        (``instrument``, :meth:`as_dict`); older records: their beamstop, flux
        calibration and polarization factor, the rest at its defaults.

        Raises
        ------
        MissingMetadataError
            The recorded mask file is gone or unreadable.
        """
        if "instrument" in parameters:
            return cls.from_dict(parameters["instrument"])
        legacy = {"beamstop": parameters.get("beamstop"), "flux_calibration": parameters.get("flux_calibration"),
                  "polarization_factor": parameters.get("polarization_factor", 0.99)}
        return cls.from_dict({k: v for k, v in legacy.items() if v is not None})


@dataclass(frozen=True)
class RunSetup:
    """A run as the router hands it to its analysis.

    Attributes
    ----------
    start : dict
        The run's start document, with the keys it lacks (image key, stage motors,
        monitors, fixed energy, detector name) taken from the beamline description (a
        new dict; the document is untouched).
    instrument : InstrumentSettings
        The run's detector and corrections.
    nominal : DetectorPositionModel, ArmModel or None
        The nominal geometry of the run's detector (None: not described).
    energy_key : str or None
        The data key of the photon energy, for runs whose start document has no
        ``energy_keV`` (None: the energy is in the start document or unknown).
    keV_per_unit : float
        The unit of ``energy_key`` in keV.
    """

    start: dict
    instrument: InstrumentSettings = InstrumentSettings()
    nominal: DetectorPositionModel | ArmModel | None = None
    energy_key: str | None = None
    keV_per_unit: float = 1.0
