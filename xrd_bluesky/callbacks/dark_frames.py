"""The dark frame subtracted from a measurement run's frames.

It is the mean frame of the run's own ``dark`` stream, or of a dark run of the same
exposure named by ``dark_uid`` (looked up in a catalog), as the beamline's dark policy
(``if_present``, ``required`` or ``none``) allows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import MissingMetadataError
from ..frames import FrameEvent, mean_dark

#: Looks up a dark run's mean frame (counts) and frame exposure (s) by uid.
Darks = Callable[[str], tuple[np.ndarray, float | None]]


class RunDark:
    """The dark frame of one run, and whether the run's frames wait for it.

    Parameters
    ----------
    policy : str
        The beamline's dark policy: ``if_present``, ``required`` (a frame without a
        dark is refused) or ``none`` (no dark run is looked up, no dark stream waited for).
    announced : bool
        The run's start document announces dark frames: its frames wait for them.
    dark_uid : str or None
        A dark run of the same exposure, whose mean frame is used instead of the
        run's own ``dark`` stream.
    darks : callable, optional
        Resolves ``dark_uid`` to its mean frame (counts) and frame exposure (s).

    Raises
    ------
    MissingMetadataError
        The run names a dark run and there is no catalog to look it up in.
    """

    def __init__(self, policy: str, *, announced: bool, dark_uid: str | None, darks: Darks | None = None):
        self.policy = policy
        #: The mean dark frame (counts per frame); None until known.
        self.frame: np.ndarray | None = None
        #: The run's frames wait for announced dark frames.
        self.waiting = announced and policy != "none"
        #: The dark run used (None: the run's own dark stream, if any).
        self.uid = dark_uid if policy != "none" else None
        self.exposure_s: float | None = None
        if self.uid is not None:
            if darks is None:
                raise MissingMetadataError(f"run names dark_uid={self.uid!r} but no catalog is available")
            self.frame, self.exposure_s = darks(self.uid)
            self.waiting = False

    def stream_frames(self, frame_events: list[FrameEvent]) -> None:
        """Events of the run's ``dark`` stream: their mean is the dark frame, unless a
        dark run is used instead."""
        if frame_events and self.uid is None:
            self.frame = mean_dark(frame_events)
            self.waiting = False

    def stop_waiting(self) -> None:
        """The run ended: frames waiting for dark frames never taken go on without."""
        self.waiting = False

    def check_required(self) -> None:
        """Refuse a frame without a dark under the ``required`` policy.

        Raises
        ------
        MissingMetadataError
            The policy is ``required`` and the run has no dark frame.
        """
        if self.frame is None and self.policy == "required":
            raise MissingMetadataError("the beamline's dark policy is 'required' and this run has no dark frames "
                                       "(no dark stream, no dark_uid)")

    def check_exposure(self, acquire_time: float | None) -> None:
        """Refuse frames whose exposure ``acquire_time`` (s) differs from the dark run's.

        Raises
        ------
        MissingMetadataError
            The dark run's frames have another exposure.
        """
        if self.exposure_s is not None and acquire_time is not None \
                and not np.isclose(self.exposure_s, acquire_time, rtol=1e-6):
            raise MissingMetadataError(f"dark run {self.uid} has {self.exposure_s} s frames, "
                                       f"this run {acquire_time} s: take a dark run of the same exposure")
