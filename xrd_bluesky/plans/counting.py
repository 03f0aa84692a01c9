"""Counting at several detector-stage positions, with shutter-closed dark frames."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import plan

DARK_STREAM = "dark"


def stage_motors(stage) -> dict[str, str]:
    """Data-key names of a detector stage's ``x``, ``y`` and ``distance`` motors."""
    return {axis: getattr(stage, axis).name for axis in ("x", "y", "distance")}


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
    _md = {"purpose": "dark", "detectors": [d.name for d in detectors], "num_points": num,
           "plan_name": "dark_run", "plan_args": {"detectors": [repr(d) for d in detectors], "num": num},
           **(md or {})}

    @bpp.run_decorator(md=_md)
    def body():
        yield from bps.mv(shutter, "closed")
        for _ in range(num):
            yield from bps.trigger_and_read(list(detectors))
        yield from bps.mv(shutter, "open")

    return (yield from bpp.stage_wrapper(body(), list(detectors)))


def multi_position_count(detectors: Sequence[Any], stage, positions: Iterable[Sequence[float]], *,
                         num: int = 1, shutter=None, num_darks: int = 1, energy=None, sample: dict | None = None,
                         purpose: str = "measurement", md: dict | None = None):
    """Count ``num`` times at each detector-stage position.

    Parameters
    ----------
    detectors : list
        Readable devices (area detector, ion chambers), triggered together.
    stage : device
        Detector stage with ``x``, ``y`` and ``distance`` motors (mm).
    positions : iterable of (x, y, distance)
        Stage positions in mm.
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
    md : dict, optional
        Extra metadata.

    Yields
    ------
    Msg
        Bluesky messages.
    """
    positions = [tuple(float(v) for v in p) for p in positions]
    motors = [stage.x, stage.y, stage.distance]
    _md = {
        "purpose": purpose,
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motors],
        "num_points": num * len(positions),
        "num_intervals": num * len(positions) - 1,
        "plan_name": "multi_position_count",
        "plan_args": {"detectors": [repr(d) for d in detectors], "stage": repr(stage),
                      "positions": positions, "num": num},
        "stage_motors": stage_motors(stage),
        "positions_mm": positions,
        "dark_frames": shutter is not None,
        "hints": {"dimensions": [([m.name for m in motors], "primary")]},
    }
    if sample is not None:
        _md["sample"] = sample

    def exposures():
        for position in positions:
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
        run_md["energy_keV"] = float((yield from bps.rd(energy)))
    run_md.update(md or {})
    return (yield from body())
