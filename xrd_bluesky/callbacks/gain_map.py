"""Live gain map at the end of a gain-map run.

Per detector-stage position: dark-subtracted mean of its frames, geometry from the
current calibration, a mask of invalid, saturated and beamstop-shadowed pixels; then
:func:`~xrd_bluesky.science.gain_map.method.compute_gain_map`. The derived run has a
``gain_map`` stream (gain, bad-pixel mask, uncertainty) and a ``statistics`` stream;
the map is exported as float32 TIFF (gain and 1/gain) and EDF to
``<export_dir>/<derived uid>/`` with provenance in the headers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CorruptFrameError, MissingMetadataError
from ..frames import detector_config, mean_dark, stage_position
from ..paths import safe_child
from ..schema import InstrumentSettings
from ..schema.gain_map import GAIN_MAP_KEYS, GAIN_MAP_STREAM, STATISTICS_STREAM, GainMapParameters
from ..schema.start import DARK_STREAM, ENERGY_KEV, GAIN_MAP, PRIMARY_STREAM, STAGE_MOTORS, check_start
from ..science.calibration.geometry_source import GeometrySource
from ..science.gain_map.method import (
    GainMap,
    GainMapSettings,
    PositionData,
    check_shadows_disjoint,
    compute_gain_map,
)
from ..science.geometry import StagePosition
from ..science.reduction.integration import invalid_pixels
from ..science.reduction.masks import beamstop_shadow
from .derived import Emit, FrameRunCallback


class GainMapBuilder(FrameRunCallback):
    """Compute the detector gain map from a gain-map run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's documents.
    geometry : GeometrySource
        Current calibration.
    instrument : InstrumentSettings
        The beamstop, static mask, saturation and frame storage.
    export_dir : path, optional
        Where the TIFF/EDF files go.
    settings : GainMapSettings
        Parameters of the computation.
    provenance : dict, optional
        Extra start-document keys of the derived run (see :class:`DerivedRunCallback`).
    """

    analysis = "gain_map"

    def __init__(self, emit: Emit, geometry: GeometrySource, *, instrument: InstrumentSettings = InstrumentSettings(),
                 export_dir: str | Path | None = None, settings: GainMapSettings = GainMapSettings(),
                 provenance: dict | None = None):
        super().__init__(emit, provenance=provenance, frame_options=instrument.frame_options)
        self.geometry = geometry
        self.instrument = instrument
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.settings = settings

    def start(self, doc):
        check_start(doc, GAIN_MAP)
        self._parent = doc
        self.parameters = GainMapParameters(self.settings, self.instrument, doc.get("image_key"))
        self.open_derived(doc, self.parameters.as_dict(), geometry=self.geometry.provenance(),
                          calibration_uid=self.geometry.calibration_uid)

    def finish(self, parent_stop):
        darks = self.frames.ready(DARK_STREAM)
        dark = mean_dark(darks) if darks else None
        groups: dict[StagePosition, list] = {}
        config = None
        for fe in self.frames.ready(PRIMARY_STREAM):
            if fe.frames is None:
                raise CorruptFrameError(f"gain-map frame of event {fe.seq_num} could not be read: {fe.error}")
            config = detector_config(fe.descriptor, self.frames.image_key(fe.descriptor))
            groups.setdefault(stage_position(fe.event, self._parent[STAGE_MOTORS]), []).append(fe.frames)
        if not groups:
            raise MissingMetadataError("gain-map run has no frames in its primary stream")
        positions = [self._position_data(i, pos, np.concatenate(frames), dark, config)
                     for i, (pos, frames) in enumerate(groups.items())]
        beamstop = self.instrument.beamstop
        if beamstop is not None:
            check_shadows_disjoint([p.poni for p in positions], beamstop, [p.label for p in positions])
        result = compute_gain_map(positions, dark_rate=dark, settings=self.settings)
        self._emit_result(result)

    def _position_data(self, index: int, position: StagePosition, frames: np.ndarray, dark, config) -> PositionData:
        poni = self.geometry.poni(position, self._parent[ENERGY_KEV])
        label = f"position {index} (x={position.x:g}, y={position.y:g}, distance={position.distance:g} mm)"
        mean = frames.astype(np.float64).mean(axis=0)
        if dark is not None:
            mean -= dark
        static = self.instrument.mask
        if self.instrument.beamstop is not None:
            shadow = beamstop_shadow(self.instrument.beamstop, poni, self.parameters.beamstop_margin_mm)
            static = shadow if static is None else static | shadow
        mask = invalid_pixels(frames.min(axis=0), poni, static_mask=static)
        max_count = self.instrument.max_count(config["max_count"] if config else None)
        if max_count:
            mask |= frames.max(axis=0) >= max_count
        return PositionData(label, mean, len(frames), poni, mask)

    def _emit_result(self, result: GainMap) -> None:
        rows, cols = result.gain.shape
        image = {"dtype": "array", "shape": [rows, cols], "source": "xrd_bluesky"}
        desc = self._bundle.compose_descriptor(name=GAIN_MAP_STREAM, data_keys={
            key: {**image, "dtype_numpy": dtype, "units": units} for key, (dtype, units) in GAIN_MAP_KEYS.items()})
        self.emit("descriptor", desc.descriptor_doc)
        data = {"gain": result.gain, "bad": result.bad.astype(np.uint8), "gain_sigma": result.sigma}
        now = time.time()
        self.emit("event", desc.compose_event(data=data, timestamps={k: now for k in data}, seq_num=1))
        stats = {k: v for k, v in result.statistics.items()}
        sdesc = self._bundle.compose_descriptor(name=STATISTICS_STREAM, data_keys={
            k: {"dtype": "number" if isinstance(v, float) else "integer", "shape": [], "source": "xrd_bluesky",
                "units": "photons" if "photons" in k else ""} for k, v in stats.items()})
        self.emit("descriptor", sdesc.descriptor_doc)
        self.emit("event", sdesc.compose_event(data=stats, timestamps={k: now for k in stats}, seq_num=1))
        if self.export_dir is not None:
            self._export(result)

    def _export(self, result: GainMap) -> None:
        uid = self._bundle.start_doc["uid"]
        folder = safe_child(self.export_dir, uid)
        folder.mkdir(parents=True, exist_ok=True)
        header = {"gain_map_uid": uid, "parent_uid": self._parent["uid"],
                  "calibration_uid": self.geometry.calibration_uid or "", "xrd_bluesky_version": __version__,
                  "convention": "corrected = raw / gain; NaN = bad pixel"}
        result.export(folder / f"gain_map_{uid}_gain.tif", form="gain", metadata=header)
        result.export(folder / f"gain_map_{uid}_inverse.tif", form="inverse", metadata=header)
        result.export(folder / f"gain_map_{uid}_gain.edf", form="gain", metadata=header)
