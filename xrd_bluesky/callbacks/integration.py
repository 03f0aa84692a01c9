"""Live 1D integration of every frame of a measurement run.

For each frame: dark subtraction (from the run's ``dark`` stream), gain map (the
current one, if any), mask (detector gaps, beamstop, the gain map's bad pixels,
negative and saturated pixels), solid-angle and polarization corrections, then pyFAI
integration in q (1/nm) and 2theta (deg). The derived run's
events carry both patterns with their Poisson errors and the stage position.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import GeometryError, MissingMetadataError
from ..science.gain_map_source import GainMapSource
from ..science.geometry_source import GeometrySource
from ..science.image_formation import Beamstop, pixel_geometry
from ..science.integration import integrate_1d, invalid_pixels
from .derived import Emit, FrameRunCallback
from .frame_events import FrameEvent, detector_config, mean_dark, stage_position

#: Stream names the integration reads.
DARK_STREAM = "dark"
PRIMARY_STREAM = "primary"


class LiveIntegration(FrameRunCallback):
    """Integrate each frame of a run into a derived run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    geometry : GeometrySource
        The geometry and its provenance.
    npt : int
        Number of radial bins.
    polarization_factor : float
        pyFAI polarization factor.
    beamstop : Beamstop, optional
        The beamline's beamstop; its shadow (grown by ``beamstop_margin_mm``, mm) is masked.
    gain_map : GainMapSource, optional
        Gain map (frames are divided by it) and bad-pixel mask; its uid is recorded.
    """

    analysis = "integration_1d"

    def __init__(self, emit: Emit, geometry: GeometrySource, *, npt: int = 2000,
                 polarization_factor: float = 0.99, beamstop: Beamstop | None = None,
                 beamstop_margin_mm: float = 0.5, gain_map: GainMapSource | None = None):
        super().__init__(emit)
        self.geometry = geometry
        self.gain_map = gain_map
        self.npt = npt
        self.polarization_factor = polarization_factor
        self.beamstop = beamstop
        self.beamstop_margin_mm = beamstop_margin_mm
        self._dark: np.ndarray | None = None
        self._waiting_for_dark = False
        self._derived_descriptor = None

    def start(self, doc):
        self._energy = doc.get("energy_keV")
        self._stage_keys = doc.get("stage_motors", {})
        self._waiting_for_dark = bool(doc.get("dark_frames"))
        self.open_derived(doc, {"npt": self.npt, "polarization_factor": self.polarization_factor,
                                "units": ["q_nm^-1", "2th_deg"], "method": "bbox/csr/cython",
                                "beamstop": self.beamstop.as_dict() if self.beamstop else None,
                                "beamstop_margin_mm": self.beamstop_margin_mm},
                          geometry=self.geometry.provenance(),
                          calibration_uid=self.geometry.calibration_uid,
                          gain_map_uid=self.gain_map.gain_map_uid if self.gain_map else None)

    def finish(self, parent_stop):
        self._waiting_for_dark = False  # darks announced but never taken: integrate without
        self.frames_arrived()
        if self.frames.unmatched_frames():
            raise MissingMetadataError(f"frames without events at the end of the run: {self.frames.unmatched_frames()}")

    # -----------------------------------------------------------------------------
    def frames_arrived(self) -> None:
        darks = self.frames.ready(DARK_STREAM)
        if darks:
            self._dark = mean_dark(darks)
            self._waiting_for_dark = False
        if not self._waiting_for_dark:
            for frame_event in self.frames.ready(PRIMARY_STREAM):
                self._integrate(frame_event)

    def _integrate(self, fe: FrameEvent) -> None:
        frames = fe.frames
        config = detector_config(fe.descriptor)
        position = stage_position(fe.event, self._stage_keys)
        poni = self.geometry.poni(position, self._energy)
        if poni.detector != config["model"]:
            raise GeometryError(f"geometry is for detector {poni.detector!r}, frames come from {config['model']!r}")
        frame = frames.sum(axis=0, dtype=np.float64) if len(frames) > 1 else frames[0]
        dark = None if self._dark is None else self._dark * len(frames)
        static = None
        if self.beamstop is not None:
            static = self.beamstop.shadow(pixel_geometry(poni, self.polarization_factor),
                                          margin_mm=self.beamstop_margin_mm)
        mask = invalid_pixels(frames.min(axis=0), poni, static_mask=static)
        if config["max_count"]:
            mask |= frames.max(axis=0) >= config["max_count"]
        flat = None
        if self.gain_map is not None:
            mask |= self.gain_map.bad
            flat = self.gain_map.gain
        kw = dict(npt=self.npt, dark=dark, flat=flat, mask=mask, polarization_factor=self.polarization_factor)
        q = integrate_1d(frame, poni, unit="q_nm^-1", **kw)
        tth = integrate_1d(frame, poni, unit="2th_deg", **kw)
        data = {"q": q.radial, "intensity_q": q.intensity, "sigma_q": q.sigma,
                "two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                "dark_subtracted": self._dark is not None, "parent_seq_num": fe.seq_num}
        if position is not None:
            data.update({"stage_x": position.x, "stage_y": position.y, "stage_distance": position.distance})
        if self._derived_descriptor is None:
            self._derived_descriptor = self._bundle.compose_descriptor(
                name="primary", data_keys=_data_keys(self.npt, position is not None))
            self.emit("descriptor", self._derived_descriptor.descriptor_doc)
        now = time.time()
        self.emit("event", self._derived_descriptor.compose_event(
            data=data, timestamps={k: now for k in data}, seq_num=fe.seq_num))


def _data_keys(npt: int, with_stage: bool) -> dict:
    arr = lambda units: {"dtype": "array", "dtype_numpy": "<f8", "shape": [npt], "source": "xrd_bluesky", "units": units}  # noqa: E731
    keys = {
        "q": arr("1/nm"), "intensity_q": arr("counts"), "sigma_q": arr("counts"),
        "two_theta": arr("deg"), "intensity_2theta": arr("counts"), "sigma_2theta": arr("counts"),
        "dark_subtracted": {"dtype": "boolean", "shape": [], "source": "xrd_bluesky", "units": ""},
        "parent_seq_num": {"dtype": "integer", "shape": [], "source": "xrd_bluesky", "units": ""},
    }
    if with_stage:
        for axis in ("x", "y", "distance"):
            keys[f"stage_{axis}"] = {"dtype": "number", "shape": [], "source": "xrd_bluesky", "units": "mm"}
    return keys
