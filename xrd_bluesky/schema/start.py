"""The start-document contract of each raw run ``purpose``: its keys (names, types,
units), a builder the plans use and a validator the callbacks and sources use.

Purposes: ``calibration``, ``gain_map``, ``dark``, ``measurement`` and
``dfxrm_alignment`` (:data:`CONTRACTS`). Bluesky's own keys (``plan_name``,
``plan_args``, ``detectors``, ``motors``, ``num_points``, ``hints``) are the
RunEngine's and are not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MissingMetadataError
from ..science.reduction.absolute_scale import KNOWN_STANDARDS

# -- purposes -----------------------------------------------------------------
CALIBRATION = "calibration"
GAIN_MAP = "gain_map"
DARK = "dark"
MEASUREMENT = "measurement"
DFXRM_ALIGNMENT = "dfxrm_alignment"
#: The purpose of a derived run (its ``analysis`` names what made it).
DERIVED = "derived"

# -- streams of a raw run ----------------------------------------------------------
#: The run's exposures.
PRIMARY_STREAM = "primary"
#: Shutter-closed frames taken before the exposures (``dark_frames: true``).
DARK_STREAM = "dark"

# -- key names ----------------------------------------------------------------
PURPOSE = "purpose"
SAMPLE = "sample"
CALIBRANT = "calibrant"
ENERGY_KEV = "energy_keV"
DETECTOR_NAME = "detector_name"
IMAGE_KEY = "image_key"
MONITORS = "monitors"
MOTORS = "motors"
STAGE_MOTORS = "stage_motors"
POSITIONS_MM = "positions_mm"
ARM_MOTORS = "arm_motors"
ARM_POSITIONS = "arm_positions"
DARK_FRAMES = "dark_frames"
EXPOSURE_S = "exposure_s"
FRAMES_PER_POSITION = "frames_per_position"
DARK_UID = "dark_uid"
BACKGROUND_UID = "background_uid"
STANDARD_UID = "standard_uid"
STANDARD = "standard"
INTEGRATION = "integration"
PEAKS = "peaks"
PDF = "pdf"
CRYSTAL = "crystal"
HKL = "hkl"
MOUNTING = "mounting"
SCATTERING_PLANE = "scattering_plane"
TWO_THETA_DEG = "two_theta_deg"
D_A = "d_A"
ANGLES_DEG = "angles_deg"
ROCKING_SENSITIVITY = "rocking_sensitivity"
ROCKING_MOTOR = "rocking_motor"
ROCKING_CENTER_DEG = "rocking_center_deg"
ROCKING_WIDTH_DEG = "rocking_width_deg"
#: Keys of a measurement run passed on in its integration's derived start document, for
#: the analyses chained after it (peak fits, PDF).
CHAINED_ANALYSES = (PEAKS, PDF)
#: Start-document keys of a detector mount's motors and of its planned positions, by mount kind.
MOUNT_KEYS = {"stage": (STAGE_MOTORS, POSITIONS_MM), "arm": (ARM_MOTORS, ARM_POSITIONS)}


@dataclass(frozen=True)
class StartKey:
    """One start-document key: its type, unit and what a bad value is told to be.

    Attributes
    ----------
    name : str
        The key.
    kind : type
        ``str``, ``float``, ``int``, ``bool``, ``dict`` (any mapping) or ``list`` (a
        tuple too).
    units : str
        Its unit ("" when it has none or holds several values of their own).
    expected : str
        What a value must be, for messages (``start document 'KEY' is VALUE; expected
        EXPECTED``).
    empty_is_absent : bool
        Whether a false value (None, ``{}``, ``""``...) counts as the key being absent
        (rather than being checked).
    """

    name: str
    kind: type
    units: str = ""
    expected: str = ""
    empty_is_absent: bool = False

    def check(self, value: Any) -> Any:
        """``value``, checked to be of :attr:`kind` (None passes: not given).

        Raises
        ------
        MissingMetadataError
            Naming the key and the value.
        """
        if value is None or (self.empty_is_absent and not value):
            return value
        accepted = {dict: Mapping, list: (list, tuple), float: (int, float, np.number), int: (int, np.integer)}
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, accepted.get(self.kind, self.kind)):
            raise MissingMetadataError(f"start document {self.name!r} is {value!r}; expected {self.expected}")
        return value


def _key(name: str, kind: type, units: str = "", expected: str = "", empty_is_absent: bool = False) -> StartKey:
    default = {str: "text", float: "a number", int: "an integer", bool: "true or false", dict: "a mapping",
               list: "a list"}[kind]
    return StartKey(name, kind, units, expected or default, empty_is_absent)


#: Every key of the contracts, by name.
KEYS: dict[str, StartKey] = {k.name: k for k in (
    _key(PURPOSE, str),
    _key(SAMPLE, dict, expected="a mapping (name, composition, thickness_mm)", empty_is_absent=True),
    _key(CALIBRANT, str, expected="a pyFAI calibrant name"),
    _key(ENERGY_KEV, float, "keV"),
    _key(DETECTOR_NAME, str),
    _key(IMAGE_KEY, str),
    _key(MONITORS, dict, expected="a mapping {'i0': data key, 'it': data key}", empty_is_absent=True),
    _key(MOTORS, list),
    _key(STAGE_MOTORS, dict, expected="a mapping of the stage's axes (x, y, distance) to data keys"),
    _key(POSITIONS_MM, list, "mm", "a list of (x, y, distance) stage positions"),
    _key(ARM_MOTORS, dict, expected="a mapping of the arm's axes (angle, translation) to data keys"),
    _key(ARM_POSITIONS, list, "deg", "a list of arm positions (angle deg[, translation mm])"),
    _key(DARK_FRAMES, bool),
    _key(EXPOSURE_S, float, "s"),
    _key(FRAMES_PER_POSITION, int),
    _key(DARK_UID, str, expected="the uid of a dark run"),
    _key(BACKGROUND_UID, str, expected="the uid of a raw run"),
    _key(STANDARD_UID, str, expected="the uid of a raw run"),
    _key(STANDARD, str, expected=f"one of {sorted(KNOWN_STANDARDS)}"),
    _key(INTEGRATION, dict, expected="a mapping of options (npt, cake, split)"),
    _key(PEAKS, dict, expected="a mapping (see xrd_bluesky.science.reduction.peak_specs)"),
    _key(PDF, dict, expected="a mapping of PDFgetX3 parameters (composition, rpoly, qmax, rmax, ..., "
                             "background_uid)"),
    _key(CRYSTAL, dict, expected="a mapping (name, formula, space_group, cif, notices)"),
    _key(HKL, list, expected="a list of three integers"),
    _key(MOUNTING, dict, expected="a mapping (up, exit) of facets"),
    _key(SCATTERING_PLANE, str),
    _key(TWO_THETA_DEG, float, "deg"),
    _key(D_A, float, "A"),
    _key(ANGLES_DEG, dict, "deg", "a mapping (omega, chi, phi) of angles"),
    _key(ROCKING_SENSITIVITY, dict, "deg/deg", "a mapping of goniometer axes to sensitivities"),
    _key(ROCKING_MOTOR, str),
    _key(ROCKING_CENTER_DEG, float, "deg"),
    _key(ROCKING_WIDTH_DEG, float, "deg"),
)}


@dataclass(frozen=True)
class StartContract:
    """What the start document of a run of one purpose holds.

    Attributes
    ----------
    purpose : str
        The ``purpose``.
    what : str
        What such a run is called in messages (``"calibration run"``).
    required : tuple of str
        Keys its analysis cannot start without.
    checked : tuple of str
        Keys whose values are checked (:meth:`StartKey.check`) when present.
    optional : tuple of str
        Other keys it may hold.
    """

    purpose: str
    what: str
    required: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key of the contract."""
        return (PURPOSE, *self.required, *self.checked, *self.optional)


#: Keys any raw run of a detector may hold (from the plan or the beamline description).
_DETECTOR_KEYS = (SAMPLE, DETECTOR_NAME, IMAGE_KEY, MONITORS, MOTORS, STAGE_MOTORS, POSITIONS_MM, ARM_MOTORS,
                  ARM_POSITIONS, DARK_FRAMES, EXPOSURE_S, ENERGY_KEV)

#: The contract of each purpose.
CONTRACTS: dict[str, StartContract] = {c.purpose: c for c in (
    StartContract(CALIBRATION, "calibration run", required=(CALIBRANT, ENERGY_KEV),
                  optional=tuple(k for k in _DETECTOR_KEYS if k != ENERGY_KEV)),
    StartContract(GAIN_MAP, "gain-map run", required=(ENERGY_KEV, STAGE_MOTORS),
                  optional=(*(k for k in _DETECTOR_KEYS if k not in (ENERGY_KEV, STAGE_MOTORS)), FRAMES_PER_POSITION)),
    StartContract(DARK, "dark run", optional=(DETECTOR_NAME, IMAGE_KEY)),
    StartContract(MEASUREMENT, "measurement run", checked=(INTEGRATION, MONITORS, SAMPLE, STANDARD),
                  optional=(*(k for k in _DETECTOR_KEYS if k not in (MONITORS, SAMPLE)), DARK_UID, BACKGROUND_UID,
                            STANDARD_UID, PEAKS, PDF)),
    StartContract(DFXRM_ALIGNMENT, "DF-XRM alignment run",
                  optional=(CRYSTAL, HKL, ENERGY_KEV, MOUNTING, SCATTERING_PLANE, TWO_THETA_DEG, D_A, ANGLES_DEG,
                            ROCKING_SENSITIVITY, ROCKING_MOTOR, ROCKING_CENTER_DEG, ROCKING_WIDTH_DEG)),
)}
#: The live analysis of each purpose that has one.
ANALYSIS_OF_PURPOSE = {CALIBRATION: "calibration", GAIN_MAP: "gain_map", MEASUREMENT: "integration"}


def contract(purpose: str) -> StartContract:
    """The contract of ``purpose``.

    Raises
    ------
    MissingMetadataError
        An unknown purpose (the known ones are named).
    """
    if purpose not in CONTRACTS:
        raise MissingMetadataError(f"unknown run purpose {purpose!r}; known: {sorted(CONTRACTS)}")
    return CONTRACTS[purpose]


def start_keys(**keys: Any) -> dict:
    """``keys`` of a start document (plans), those of the contracts (:data:`KEYS`)
    checked; None passes (recorded as not given).

    Raises
    ------
    MissingMetadataError
        A value of the wrong type (key and value named).
    """
    for name, value in keys.items():
        if name in KEYS:
            KEYS[name].check(value)
    return keys


def run_start(purpose: str, **keys: Any) -> dict:
    """The start-document metadata of a run of ``purpose`` (plans): ``keys``, checked
    (:func:`start_keys`), with the purpose.

    Raises
    ------
    MissingMetadataError
        An unknown purpose, or a value of the wrong type (key and value named).
    """
    contract(purpose)
    return {PURPOSE: purpose, **start_keys(**keys)}


def require(doc: Mapping, keys: tuple[str, ...], what: str) -> None:
    """Raise :class:`MissingMetadataError` naming the first of ``keys`` absent from ``doc``
    (``what`` is what the run is, e.g. ``"integration run"``)."""
    for key in keys:
        if key not in doc:
            raise MissingMetadataError(f"{what} {doc.get('uid')} has no {key!r} in its start document")


def check_start(doc: Mapping, purpose: str | None = None) -> Mapping:
    """``doc``, checked against the contract of ``purpose`` (default: the document's
    own): its required keys present, its checked keys of the right type.

    Raises
    ------
    MissingMetadataError
        An unknown purpose, a required key absent or a value of the wrong type.
    """
    terms = contract(doc.get(PURPOSE) if purpose is None else purpose)
    require(doc, terms.required, terms.what)
    for key in terms.checked:
        KEYS[key].check(doc.get(key))
    return doc


@dataclass(frozen=True)
class MeasurementStart:
    """What a measurement run's start document tells its integration.

    Attributes
    ----------
    options : mapping
        The run's own integration options (``npt``, ``cake``, ``split``).
    energy_keV : float or None
        Photon energy (keV).
    scan_keys : list of str
        Scanned variables other than the detector mount's motors (copied to the
        derived run).
    monitors : dict
        Data keys of the ``i0`` and ``it`` ion chambers.
    thickness_mm : float or None
        The sample's thickness (mm).
    dark_frames : bool
        Whether the run takes dark frames (``dark`` stream).
    dark_uid, background_uid, standard_uid : str or None
        The dark, background and standard runs it names.
    standard : str or None
        The standard this run measures (:data:`KNOWN_STANDARDS`).
    image_key : str or None
        The data key of the detector's frames.
    chained : dict
        The ``peaks`` and ``pdf`` configurations, passed on.
    """

    options: Mapping
    energy_keV: float | None
    scan_keys: list[str]
    monitors: dict
    thickness_mm: float | None
    dark_frames: bool
    dark_uid: str | None
    background_uid: str | None
    standard_uid: str | None
    standard: str | None
    image_key: str | None
    chained: dict

    @classmethod
    def read(cls, doc: Mapping) -> MeasurementStart:
        """Read and check a measurement run's start document.

        Raises
        ------
        MissingMetadataError
            ``monitors`` or ``sample`` is not a mapping, or ``standard`` is not a
            known standard (key and value named); the integration options are checked
            by :meth:`~xrd_bluesky.schema.integration.IntegrationParameters.with_options`.
        """
        monitors = KEYS[MONITORS].check(doc.get(MONITORS)) or {}
        sample = KEYS[SAMPLE].check(doc.get(SAMPLE)) or {}
        standard = doc.get(STANDARD)
        if standard is not None and standard not in KNOWN_STANDARDS:
            raise MissingMetadataError(f"unknown standard {standard!r}; known: {sorted(KNOWN_STANDARDS)}")
        mount = {*(doc.get(STAGE_MOTORS) or {}).values(), *(doc.get(ARM_MOTORS) or {}).values()}
        return cls(options=doc.get(INTEGRATION, {}), energy_keV=doc.get(ENERGY_KEV),
                   scan_keys=[m for m in doc.get(MOTORS, []) if m not in mount], monitors=monitors,
                   thickness_mm=sample.get("thickness_mm"), dark_frames=bool(doc.get(DARK_FRAMES)),
                   dark_uid=doc.get(DARK_UID), background_uid=doc.get(BACKGROUND_UID),
                   standard_uid=doc.get(STANDARD_UID), standard=standard, image_key=doc.get(IMAGE_KEY),
                   chained={k: doc[k] for k in CHAINED_ANALYSES if k in doc})
