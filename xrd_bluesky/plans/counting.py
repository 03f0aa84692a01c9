"""Counting at several detector positions, with shutter-closed dark frames.

Plans take devices that follow the Bluesky protocols, with any names. The detector's
mount is a translation stage (a device with ``x``, ``y`` and ``distance`` motors, mm,
or a mapping of those axes to any three motors), a 2theta arm (a device or mapping
with an ``angle`` motor, deg, and optionally the ``translation`` it carries, mm), or
None for a fixed detector. Each run's start document records the data keys the
analyses need (``stage_motors`` or ``arm_motors``; with a beamline description, its
``image_key``, ``monitors`` and detector) and the planned positions (``positions_mm``
or ``arm_positions``), so callbacks never guess names; a description whose keys the
devices do not have is refused before anything moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator, plan

from ..errors import DeviceError, MissingMetadataError
from ..schema.start import (
    DARK,
    DARK_STREAM,
    ENERGY_KEV,
    MEASUREMENT,
    MONITORS,
    MOUNT_KEYS,
    PRIMARY_STREAM,
    SAMPLE,
    STAGE_MOTORS,
    run_start,
)
from ..science.calibration.position_models import ARM_AXES
from ..science.geometry import STAGE_AXES

#: A detector's mount: a stage (a device with ``x``, ``y``, ``distance`` motors, or a
#: mapping of those axes to motors), a 2theta arm (``angle`` and optionally
#: ``translation``), or None (a fixed detector).
Stage = Any


def mount_kind(stage: Stage) -> str:
    """``"fixed"`` (None), ``"arm"`` (it has an ``angle`` motor) or ``"stage"``."""
    if stage is None:
        return "fixed"
    has = (lambda axis: axis in stage) if isinstance(stage, Mapping) else (lambda axis: hasattr(stage, axis))
    return "arm" if has("angle") else "stage"


def stage_axes(stage: Stage) -> dict[str, Any]:
    """The motors of a detector's mount by axis (empty for a fixed detector): ``x``,
    ``y``, ``distance`` of a stage; ``angle`` and, when it has one, ``translation`` of
    an arm.

    Raises
    ------
    DeviceError
        A stage lacks an axis (named).
    """
    kind = mount_kind(stage)
    if kind == "fixed":
        return {}
    get = stage.get if isinstance(stage, Mapping) else (lambda axis: getattr(stage, axis, None))
    if kind == "arm":
        return {axis: get(axis) for axis in ARM_AXES if get(axis) is not None}
    motors = {axis: get(axis) for axis in STAGE_AXES}
    missing = [axis for axis, motor in motors.items() if motor is None]
    if missing:
        raise DeviceError(f"detector stage {getattr(stage, 'name', stage)!r} has no {', '.join(missing)} "
                                   "motor; give a device with x, y, distance (a stage) or angle (a 2theta arm), "
                                   "or a mapping of those axes to motors")
    return motors


def data_key(device: Any) -> str:
    """The data key a readable's reading is recorded under: its first hinted field,
    else its name (ophyd v1 and ophyd-async motors: the readback's key)."""
    fields = (getattr(device, "hints", None) or {}).get("fields") or []
    return fields[0] if fields else device.name


def stage_motors(stage: Stage) -> dict[str, str]:
    """Data keys of a detector mount's motors by axis (empty for a fixed detector)."""
    return {axis: data_key(motor) for axis, motor in stage_axes(stage).items()}


def described_metadata(beamline: Any, readables: Sequence[Any], stage: Stage) -> dict:
    """Start-document keys from a beamline description (``beamline.run_metadata()``;
    None: none), checked against the plan's devices before anything moves.

    Raises
    ------
    MissingMetadataError
        The description's stage motors are not the stage's, or a monitor key it names
        is read by none of the devices (both named).
    """
    if beamline is None:
        return {}
    md = dict(beamline.run_metadata())
    motors = stage_motors(stage)
    kind = mount_kind(stage)
    for described_kind, (key, _) in MOUNT_KEYS.items():
        described = md.pop(key, None) or {}
        if motors and described and (described_kind != kind or described != motors):
            raise MissingMetadataError(
                f"the beamline description's {described_kind} motors {described} are not this {kind}'s {motors}: "
                "correct [detectors.NAME.motion] or pass the described mount")
    keys = {key for device in readables for key in (device.name, *((getattr(device, "hints", None) or {})
                                                                   .get("fields") or []))}
    absent = {role: key for role, key in (md.get(MONITORS) or {}).items() if key not in keys}
    if absent:
        raise MissingMetadataError(f"monitor data keys {absent} of the beamline description are read by none of "
                                   f"the detectors {[d.name for d in readables]}: add the ion chambers to the "
                                   "plan's detectors or correct [monitors]")
    return md


def acquire_time_signal(detector: Any):
    """The detector's exposure-time signal (s): ``acquire_time`` of the device, of its
    ``cam`` (ophyd v1 area detectors) or of its ``driver`` (ophyd-async).

    Raises
    ------
    DeviceError
        The detector has none (named).
    """
    for owner in (detector, getattr(detector, "cam", None), getattr(detector, "driver", None)):
        signal = getattr(owner, "acquire_time", None) if owner is not None else None
        if signal is not None:
            return signal
    raise DeviceError(f"detector {detector.name!r} has no acquire_time signal (nor cam.acquire_time, "
                               "driver.acquire_time); set its exposure yourself and pass exposure=None")


@plan
def take_darks(detectors: Sequence[Any], shutter, *, num: int = 1, closed: Any = "closed", opened: Any = "open"):
    """Close ``shutter``, read ``detectors`` ``num`` times into the ``dark`` stream, reopen it."""
    yield from bps.mv(shutter, closed)
    for _ in range(num):
        yield from bps.trigger_and_read(list(detectors), name=DARK_STREAM)
    yield from bps.mv(shutter, opened)


def dark_run(detectors: Sequence[Any], shutter, *, num: int = 5, md: dict | None = None):
    """A run of ``num`` shutter-closed exposures (``purpose: "dark"``) whose uid later
    runs of the same exposure name as ``dark_uid``: their frames are dark-subtracted
    with its mean frame.

    Parameters
    ----------
    detectors : list
        Readable devices (the area detector; its exposure settings are recorded).
    shutter : settable
        Fast shutter, closed during the run and reopened after.
    num : int
        Exposures.
    md : dict, optional
        Extra metadata.
    """
    _md = {**run_start(DARK, detectors=[d.name for d in detectors], num_points=num, plan_name="dark_run",
                       plan_args={"detectors": [repr(d) for d in detectors], "num": num}), **(md or {})}

    @bpp.run_decorator(md=_md)
    def body():
        yield from bps.mv(shutter, "closed")
        for _ in range(num):
            yield from bps.trigger_and_read(list(detectors))
        yield from bps.mv(shutter, "open")

    return (yield from bpp.stage_wrapper(body(), list(detectors)))


@plan
def multi_position_count(detectors: Sequence[Readable], stage: Stage, positions: Iterable[Sequence[float]] = ((),),
                         *, num: int = 1, shutter=None, num_darks: int = 1, energy=None, sample: dict | None = None,
                         purpose: str = MEASUREMENT, beamline: Any = None,
                         md: dict | None = None) -> MsgGenerator[str]:
    """Count ``num`` times at each detector-stage position.

    Parameters
    ----------
    detectors : list
        Readable devices (area detector, ion chambers), triggered together.
    stage : device, mapping or None
        The detector's mount: a stage (a device with ``x``, ``y`` and ``distance``
        motors, mm, or a mapping of those axes to motors), a 2theta arm (``angle``,
        deg, and optionally ``translation``, mm), or None for a fixed detector.
    positions : iterable of tuples
        Positions of the mount's motors in their order: (x, y, distance) mm for a
        stage, (angle,) deg or (angle, translation) for an arm; a fixed detector: one
        empty position per count set.
    num : int
        Exposures per position.
    shutter : settable, optional
        Fast shutter; when given, ``num_darks`` dark frames are taken first (shutter
        closed) into the ``dark`` stream.
    num_darks : int
        Dark exposures.
    energy : readable, optional
        Photon-energy signal (keV), recorded in the start document.
    sample : dict, optional
        Sample description (name, composition, thickness_mm).
    purpose : str
        The run's purpose (decides its live analysis).
    beamline : BeamlineDescription, optional
        Its keys (image key, monitors, detector) are recorded and checked against the
        devices before anything moves.
    md : dict, optional
        Extra metadata.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    positions = [tuple(float(v) for v in p) for p in positions]
    motors = list(stage_axes(stage).values())
    if any(len(p) != len(motors) for p in positions):
        axes = ", ".join(stage_axes(stage)) or "a fixed detector"
        raise MissingMetadataError(f"positions {positions} do not give one value per motor of the detector's mount "
                                   f"({len(motors)}: {axes})")
    motors_key, positions_key = MOUNT_KEYS.get(mount_kind(stage), (STAGE_MOTORS, None))
    keys = {**described_metadata(beamline, list(detectors), stage), motors_key: stage_motors(stage),
            **({positions_key: positions} if positions_key else {}), **({SAMPLE: sample} if sample is not None else {})}
    _md = run_start(purpose, detectors=[d.name for d in detectors], motors=[data_key(m) for m in motors],
                    num_points=num * len(positions), num_intervals=num * len(positions) - 1,
                    plan_name="multi_position_count",
                    plan_args={"detectors": [repr(d) for d in detectors], "stage": repr(stage),
                               "positions": positions, "num": num},
                    dark_frames=shutter is not None,
                    hints={"dimensions": [([data_key(m) for m in motors], PRIMARY_STREAM)]} if motors else {}, **keys)

    def exposures():
        for position in positions:
            if motors:
                yield from bps.mv(*[arg for m, v in zip(motors, position) for arg in (m, v)])
            for _ in range(num):
                yield from bps.trigger_and_read(list(detectors) + motors)

    return (yield from counting_run(detectors, exposures(), _md, shutter=shutter, num_darks=num_darks,
                                    energy=energy, md=md))


def counting_run(detectors: Sequence[Any], exposures, run_md: dict, *, shutter=None, num_darks: int = 1,
                 energy=None, md: dict | None = None):
    """One run of ``exposures`` (a plan reading ``detectors``), with ``num_darks`` dark
    frames first (``dark`` stream) when a ``shutter`` is given; the photon energy (keV)
    read from ``energy`` and the caller's ``md`` are added to ``run_md``."""

    @bpp.run_decorator(md=run_md)
    def body():
        # each stream gets its own staging, hence its own frame file and StreamResource
        if shutter is not None:
            yield from bpp.stage_wrapper(take_darks(detectors, shutter, num=num_darks), list(detectors))
        yield from bpp.stage_wrapper(exposures, list(detectors))

    if energy is not None:
        run_md[ENERGY_KEV] = float((yield from bps.rd(energy)))
    run_md.update(md or {})
    return (yield from body())
