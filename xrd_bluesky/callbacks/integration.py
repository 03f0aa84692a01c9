"""Live corrected integration, stitching and absolute scale of a measurement run.

Per frame: dark subtraction (the run's ``dark`` stream, or the mean frame of a dark run
of the same exposure named by ``dark_uid``), gain map, mask (detector gaps,
beamstop, the gain map's bad pixels, the frame's negative and saturated pixels),
polarization and absolute solid angle, integrated in q (1/nm) and 2theta (deg) with
Poisson errors (counts/sr), and — when the I0/It monitors, exposure and thickness are
usable — on the absolute scale (1/cm/sr). Frames at several detector positions are
stitched (pyFAI MultiGeometry's definition) into common bins, live whenever the
detector moves on (a stage or a 2theta arm) and finally at the stop; a named background
run is subtracted and a named standard run's factor applied.

A run's start document may override the integration's bins and pixel splitting
(``integration: {"npt": 6000, "cake": [3000, 36], "split": "no"}``); scanned variables
other than the detector's mount (e.g. an applied strain) are copied into ``primary``, and
a ``peaks`` or ``pdf`` configuration is passed on in the derived start document for the
peak fits and pair distribution functions.

Derived-run streams (all intensities with their 1-sigma errors):

``primary``    per frame: q and 2theta patterns (counts/sr), monitors, the absolute
               scale's flag and its reason when refused, the number of saturated
               pixels (left out: a ring with many is underestimated), the detector
               position and ``geometry_note`` (e.g. an arm angle outside the
               calibrated range; "" when nothing is wrong);
``absolute``   per frame with usable monitors: the q pattern in 1/cm/sr (times the
               named standard's factor, recorded as ``standard_factor``; 1 without);
``cake``       per frame, when configured: (azimuth, q) cake in counts/sr, and per bin
               the mean cos(2 chi), sin(2 chi) of its pixels (where in azimuth a bin
               cut by the detector's edge or a gap really is);
``stitched``   per completed position and at the stop: all frames so far in common
               q and 2theta bins (counts/sr);
``stitched_absolute`` with it, over frames with usable monitors, in 1/cm/sr (times the
               standard's factor, as ``absolute``);
``subtracted`` with ``stitched``, when the run names a ``background_uid``: sample minus
               background in 1/cm/sr (times the standard's factor, if one is named);
``standard``   at the stop of a run whose start document says ``standard: "water"``:
               the factor known / measured and its flatness;
``rejected``   per frame with no usable pixel (all saturated, negative or masked):
               the reason, naming the raw event; the run goes on without it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

import numpy as np

from ..errors import InvalidFrameError, MissingMetadataError, MonitorError
from ..schema import InstrumentSettings
from ..science.calibration.geometry_source import GeometrySource
from ..science.detector_pixels import pixel_geometry
from ..science.gain_map.source import GainMapSource
from ..science.geometry import Poni
from ..science.reduction.absolute_scale import (
    KNOWN_STANDARDS,
    Exposure,
    ReferencePattern,
    absolute,
    scaled,
    standard_factor,
    subtract,
)
from ..science.reduction.corrected_integration import (
    SPLITTINGS,
    BinSums,
    CorrectedIntegrator,
)
from ..science.reduction.integration import MIN_RADIAL_BINS
from ..science.reduction.integration_kernel import sum_frames
from ..science.reduction.multi_geometry import covered_radial_range, stitch
from ..frames import (
    FrameEvent,
    detector_config,
    detector_position,
    mean_dark,
    planned_positions,
)
from .derived import Emit, FrameRunCallback, position_data

logger = logging.getLogger(__name__)

#: Start-document keys passed on to the derived run, for the analyses chained after it.
CHAINED_ANALYSES = ("peaks", "pdf")
#: Detector positions whose integrators are kept (their pixel-splitting matrices are the
#: memory): a run at dozens of positions keeps only the latest, however many it visits.
KEPT_POSITIONS = 4
#: Stream names the integration reads.
DARK_STREAM = "dark"
PRIMARY_STREAM = "primary"


#: Looks up a raw run's :class:`ReferencePattern` by uid.
References = Callable[[str], ReferencePattern]
#: Looks up a dark run's mean frame (counts) and frame exposure (s) by uid.
Darks = Callable[[str], tuple[np.ndarray, float | None]]


class LiveIntegration(FrameRunCallback):
    """Integrate, stitch and scale each frame of a measurement run into a derived run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    geometry : GeometrySource
        The geometry and its provenance.
    npt : int
        Number of radial bins.
    instrument : InstrumentSettings
        Detector identity, saturation, static mask, beamstop (its shadow, grown by
        ``beamstop_margin_mm``, mm, is masked), polarization factor, monitors' flux
        calibration and air transmission, dark policy, frame storage.
    gain_map : GainMapSource, optional
        Gain map (frames are divided by it) and bad-pixel mask; its uid is recorded.
    cake : (int, int), optional
        ``(radial, azimuthal)`` bins of a per-frame cake in q; none if None.
    references : callable, optional
        Resolves ``background_uid`` and ``standard_uid`` of the run's start document.
    darks : callable, optional
        Resolves ``dark_uid`` (a dark run of the same exposure) to its mean frame
        (counts) and frame exposure (s); used instead of the run's own ``dark`` stream.
    provenance : dict, optional
        Extra start-document keys of the derived run (see :class:`DerivedRunCallback`).
    """

    analysis = "integration"

    def __init__(self, emit: Emit, geometry: GeometrySource, *, npt: int = 2000,
                 instrument: InstrumentSettings = InstrumentSettings(),
                 beamstop_margin_mm: float = 0.5, gain_map: GainMapSource | None = None,
                 cake: tuple[int, int] | None = None,
                 references: References | None = None, darks: Darks | None = None,
                 provenance: dict | None = None):
        super().__init__(emit, provenance=provenance, frame_options=instrument.frame_options)
        self.geometry = geometry
        self.gain_map = gain_map
        self.npt = npt
        self.instrument = instrument
        self.beamstop_margin_mm = beamstop_margin_mm
        self.cake = cake
        self.references = references
        self.darks = darks
        self.split = "bbox"
        self._dark: np.ndarray | None = None
        self._waiting_for_dark = False
        self._integrators: OrderedDict[tuple, dict[str, CorrectedIntegrator]] = OrderedDict()
        # running totals (constant memory however long the run) and their frame counts
        self._stitched: BinSums | None = None
        self._stitched_2th: BinSums | None = None
        self._stitched_abs: BinSums | None = None
        self._n_stitched = self._n_stitched_abs = 0
        self._position = None
        self._positions: dict = {}  # position -> what is wrong with the geometry there ("" if nothing)
        self._scan_units: dict[str, str] = {}
        self._integrated = 0
        self._rejected: list[str] = []

    # -- run lifecycle -------------------------------------------------------
    def start(self, doc):
        self._apply_run_options(doc.get("integration", {}))
        self._energy = doc.get("energy_keV")
        self._start = doc
        mount_keys = {*(doc.get("stage_motors") or {}).values(), *(doc.get("arm_motors") or {}).values()}
        self._scan_keys = [m for m in doc.get("motors", []) if m not in mount_keys]
        self._monitor_keys = doc.get("monitors") or {}
        if not isinstance(self._monitor_keys, dict):
            raise MissingMetadataError(f"start document 'monitors' is {self._monitor_keys!r}; expected a mapping "
                                       "{'i0': data key, 'it': data key}")
        sample = doc.get("sample") or {}
        if not isinstance(sample, dict):
            raise MissingMetadataError(f"start document 'sample' is {sample!r}; expected a mapping "
                                       "(name, composition, thickness_mm)")
        self._thickness_mm = sample.get("thickness_mm")
        self._waiting_for_dark = bool(doc.get("dark_frames")) and self.instrument.dark != "none"
        self._dark_uid = doc.get("dark_uid") if self.instrument.dark != "none" else None
        self._dark_exposure = None
        if self._dark_uid is not None:
            if self.darks is None:
                raise MissingMetadataError(f"run names dark_uid={self._dark_uid!r} but no catalog is available")
            self._dark, self._dark_exposure = self.darks(self._dark_uid)
            self._waiting_for_dark = False
        self._ranges = self._radial_ranges(doc)
        self._background = self._reference(doc, "background_uid")
        self._standard = self._reference(doc, "standard_uid")
        self._is_standard = doc.get("standard")
        if self._is_standard is not None and self._is_standard not in KNOWN_STANDARDS:
            raise MissingMetadataError(f"unknown standard {self._is_standard!r}; known: {sorted(KNOWN_STANDARDS)}")
        if self._standard is not None and self._standard.standard_factor is None:
            raise MissingMetadataError(f"standard run {self._standard.uid} has no standard factor")
        self.open_derived(doc, {"npt": self.npt, "polarization_factor": self.instrument.polarization_factor,
                                "units": ["q_nm^-1", "2th_deg"], "method": f"{self.split} split, CSR (pyFAI), fused kernel",
                                "radial_ranges": {k: list(v) for k, v in self._ranges.items()},
                                "cake": list(self.cake) if self.cake else None,
                                "beamstop_margin_mm": self.beamstop_margin_mm,
                                "monitors": self._monitor_keys, "instrument": self.instrument.as_dict(),
                                "image_key": doc.get("image_key")},
                          geometry=self.geometry.provenance(),
                          calibration_uid=self.geometry.calibration_uid,
                          gain_map_uid=self.gain_map.gain_map_uid if self.gain_map else None,
                          background_uid=self._background.uid if self._background else None,
                          dark_uid=self._dark_uid,
                          standard_uid=self._standard.uid if self._standard else None,
                          scan_keys=self._scan_keys, **{k: doc[k] for k in CHAINED_ANALYSES if k in doc})

    def _apply_run_options(self, options: dict) -> None:
        """A run's own ``integration`` options (``npt``, ``cake``, ``split``) override the defaults."""
        if not isinstance(options, dict):
            raise MissingMetadataError(f"start document 'integration' is {options!r}; expected a mapping "
                                       "of options (npt, cake, split)")
        unknown = set(options) - {"npt", "cake", "split"}
        if unknown:
            raise MissingMetadataError(f"unknown integration options {sorted(unknown)}; known: ['cake', 'npt', 'split']")
        self.split = options.get("split", self.split)
        if self.split not in SPLITTINGS:
            raise MissingMetadataError(f"integration option split={self.split!r}; use one of {SPLITTINGS}")
        npt, cake = options.get("npt", self.npt), options.get("cake", self.cake)
        try:
            self.npt = int(npt)
            self.cake = None if cake is None else (int(cake[0]), int(cake[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise MissingMetadataError(f"integration options npt={npt!r}, cake={cake!r}: expected an integer "
                                       "and a pair of integers (radial, azimuthal bins)") from None
        if self.npt < MIN_RADIAL_BINS or (self.cake is not None and min(self.cake) < 1):
            raise MissingMetadataError(f"integration options npt={self.npt}, cake={self.cake}: too few bins")

    def finish(self, parent_stop):
        self._waiting_for_dark = False  # darks announced but never taken: integrate without
        self.frames_arrived()
        if self.frames.unmatched_frames():
            raise MissingMetadataError(f"frames without events at the end of the run: {self.frames.unmatched_frames()}")
        for stream, seq_num in self.frames.waiting_events():
            if stream == PRIMARY_STREAM:
                self._reject(seq_num, f"event {seq_num}: its frames were never announced (no datum or stream datum)")
        if self._stitched is not None:
            self._emit_stitched(final=True)
        if not self._integrated:
            why = f"{len(self._rejected)} rejected, the first: {self._rejected[0]}" if self._rejected \
                else "the run has no events in its primary stream"
            raise MissingMetadataError(f"no frame of this run was integrated ({why})")

    def frames_arrived(self) -> None:
        darks = self.frames.ready(DARK_STREAM)
        if darks and self._dark_uid is None:
            self._dark = mean_dark(darks)
            self._waiting_for_dark = False
        if not self._waiting_for_dark:
            for frame_event in self.frames.ready(PRIMARY_STREAM):
                self._integrate(frame_event)

    # -- per frame -----------------------------------------------------------
    def _integrate(self, fe: FrameEvent) -> None:
        if fe.frames is None:
            self._reject(fe.seq_num, fe.error)
            return
        if self._dark is None and self.instrument.dark == "required":
            raise MissingMetadataError("the beamline's dark policy is 'required' and this run has no dark frames "
                                       "(no dark stream, no dark_uid)")
        config = detector_config(fe.descriptor, self.frames.image_key(fe.descriptor))
        position = detector_position(fe.event, self._start)
        poni = self.geometry.poni(position, self._energy)
        if position not in self._positions:
            self._positions[position] = self._uncalibrated(position, fe.seq_num)
        self.instrument.check_detector(poni, config["model"], fe.frames.shape[1:])
        max_count = self.instrument.max_count(config["max_count"])
        if self._stitched is not None and position != self._position:
            self._emit_stitched(final=False)
        self._position = position
        if self._dark_exposure is not None and config.get("acquire_time") is not None \
                and not np.isclose(self._dark_exposure, config["acquire_time"], rtol=1e-6):
            raise MissingMetadataError(f"dark run {self._dark_uid} has {self._dark_exposure} s frames, "
                                       f"this run {config['acquire_time']} s: take a dark run of the same exposure")
        frame, saturated = _combined_frame(fe.frames, max_count)
        integrators = self._integrators_for(poni, len(fe.frames), max_count)
        try:
            source = f"frame(s) of event {fe.seq_num} of raw run {fe.descriptor.get('run_start')}"
            q = integrators["q"].sums(frame, source=source)
        except InvalidFrameError as exc:  # e.g. all saturated: flag this event, go on with the run
            self._reject(fe.seq_num, str(exc))
            return
        self._integrated += 1
        tth_sums = integrators["2th"].sums(frame)
        tth = tth_sums.result()
        self._stitched = stitch([self._stitched, q])
        self._stitched_2th = stitch([self._stitched_2th, tth_sums])
        self._n_stitched += 1
        pattern = q.result()
        data = {"q": pattern.radial, "intensity_q": pattern.intensity, "sigma_q": pattern.sigma,
                "two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                "dark_subtracted": self._dark is not None, "parent_seq_num": fe.seq_num,
                "saturated_pixels": saturated, "geometry_note": self._positions[position]}
        if position is not None:
            data.update(position_data(position))
        data.update(self._scan_values(fe))
        exposure, reason = self._exposure(fe, config)
        data.update({"i0": _monitor(fe, self._monitor_keys.get("i0")), "it": _monitor(fe, self._monitor_keys.get("it")),
                     "exposure_s": exposure.exposure_s if exposure else np.nan,
                     "absolute_ok": exposure is not None, "absolute_reason": reason})
        self._event("primary", data, fe.seq_num)
        if exposure is not None:
            scaled_sums = absolute(q, exposure)
            self._stitched_abs = stitch([self._stitched_abs, scaled_sums])
            self._n_stitched_abs += 1
            abs_pattern = scaled(scaled_sums.result(), self._standard_factor())
            self._event("absolute", {"q": abs_pattern.radial, "intensity": abs_pattern.intensity,
                                     "sigma": abs_pattern.sigma, "standard_factor": self._standard_factor(),
                                     "transmission": exposure.transmission,
                                     "flux_ph_s": exposure.flux_ph_s, "parent_seq_num": fe.seq_num}, fe.seq_num)
        if "cake" in integrators:
            cake = integrators["cake"].sums(frame).result()
            cos2chi, sin2chi = integrators["cake"].azimuthal_moments
            self._event("cake", {"q": cake.radial, "azimuth": cake.azimuthal, "intensity": cake.intensity,
                                 "sigma": cake.sigma, "cos2chi": cos2chi.astype(np.float32),
                                 "sin2chi": sin2chi.astype(np.float32), "parent_seq_num": fe.seq_num}, fe.seq_num)

    def _uncalibrated(self, position, seq_num: int) -> str:
        """What is wrong with the geometry at a new ``position``, warned once: an arm
        angle outside the calibrated range (the model extrapolates); "" if nothing."""
        message = self.geometry.model.outside_calibrated_range(position) if self.geometry.follows_stage else None
        if message:
            logger.warning("event %s: %s", seq_num, message)
        return message or ""

    def _reject(self, seq_num: int, reason: str) -> None:
        """Flag event ``seq_num`` in the ``rejected`` stream (the run goes on without it)."""
        logger.warning("event %s not integrated: %s", seq_num, reason)
        self._rejected.append(reason)
        self._event("rejected", {"reason": reason, "parent_seq_num": seq_num}, seq_num)

    def _scan_values(self, fe: FrameEvent) -> dict[str, float]:
        """The raw event's scanned variables other than the stage (e.g. an applied
        strain), with their units noted for the descriptor."""
        values = {}
        for key in self._scan_keys:
            if key in fe.event["data"]:
                values[key] = float(fe.event["data"][key])
                self._scan_units[key] = fe.descriptor["data_keys"][key].get("units") or ""
        return values

    def _exposure(self, fe: FrameEvent, config: dict) -> tuple[Exposure | None, str]:
        """The frame's :class:`Exposure`, or None and the reason it is unusable."""
        if self.instrument.flux_calibration is None:
            return None, "the beamline description gives no flux calibration of I0"
        if not {"i0", "it"} <= set(self._monitor_keys):
            return None, f"the run names no I0 and It monitors (monitors: {self._monitor_keys})"
        try:
            acquire_time = config.get("acquire_time")
            exposure = Exposure(_monitor(fe, self._monitor_keys["i0"]), _monitor(fe, self._monitor_keys["it"]),
                                None if acquire_time is None else float(acquire_time) * len(fe.frames),
                                self._thickness_mm, self.instrument.flux_calibration,
                                self.instrument.air_transmission)
            exposure.check()
        except (MonitorError, MissingMetadataError) as exc:
            return None, str(exc)
        return exposure, ""

    def _integrators_for(self, poni: Poni, n_frames: int, max_count) -> dict[str, CorrectedIntegrator]:
        key = (poni, n_frames)
        if key in self._integrators:
            self._integrators.move_to_end(key)
        else:
            beamstop = self.instrument.beamstop
            static = beamstop.shadow(pixel_geometry(poni), margin_mm=self.beamstop_margin_mm) if beamstop else None
            if self.instrument.mask is not None:
                static = self.instrument.mask if static is None else static | self.instrument.mask
            gain = None
            if self.gain_map is not None:
                static = self.gain_map.bad if static is None else static | self.gain_map.bad
                gain = self.gain_map.gain
            common = dict(mask=static, gain=gain, polarization_factor=self.instrument.polarization_factor,
                          split=self.split,
                          dark=None if self._dark is None else self._dark * n_frames,
                          max_count=None if not max_count else max_count * n_frames)
            built = {"q": CorrectedIntegrator(poni, npt=self.npt, unit="q_nm^-1", radial_range=self._ranges["q_nm^-1"], **common),
                     "2th": CorrectedIntegrator(poni, npt=self.npt, unit="2th_deg", radial_range=self._ranges["2th_deg"], **common)}
            if self.cake:
                built["cake"] = CorrectedIntegrator(poni, npt=self.cake[0], npt_azim=self.cake[1], unit="q_nm^-1",
                                                    radial_range=self._ranges["q_nm^-1"], **common)
            self._integrators[key] = built
            while len(self._integrators) > KEPT_POSITIONS:
                self._integrators.popitem(last=False)
        return self._integrators[key]

    def _radial_ranges(self, doc: dict) -> dict[str, tuple[float, float]]:
        """Common q and 2theta ranges of every position the run will visit."""
        positions = planned_positions(doc) or [None]
        ponis = [self.geometry.poni(p, self._energy) for p in positions]
        return {unit: covered_radial_range(ponis, unit) for unit in ("q_nm^-1", "2th_deg")}

    def _reference(self, doc: dict, key: str) -> ReferencePattern | None:
        uid = doc.get(key)
        if uid is None:
            return None
        if self.references is None:
            raise MissingMetadataError(f"run names {key}={uid!r} but no catalog is available to look it up")
        return self.references(uid)

    # -- stitched results ----------------------------------------------------
    def _emit_stitched(self, final: bool) -> None:
        counts, tth = self._stitched.result(), self._stitched_2th.result()
        self._event("stitched", {"q": counts.radial, "intensity": counts.intensity, "sigma": counts.sigma,
                                 "two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                                 "frames": self._n_stitched, "positions": len(self._positions), "final": final})
        if self._stitched_abs is None:
            return
        pattern = self._stitched_abs.result()  # monitors' absolute scale
        factor = self._standard_factor()
        calibrated = scaled(pattern, factor)
        self._event("stitched_absolute", {"q": pattern.radial, "intensity": calibrated.intensity,
                                          "sigma": calibrated.sigma, "frames": self._n_stitched_abs,
                                          "thickness_mm": self._thickness_mm, "standard_factor": factor,
                                          "final": final})
        if final and self._is_standard:
            known = KNOWN_STANDARDS[self._is_standard]
            result = standard_factor(pattern, known["radial"], known["intensity"], known["radial_range"])
            self._event("standard", {"standard_factor": result.factor, "standard_factor_sigma": result.sigma,
                                     "deviation_low": result.low, "deviation_high": result.high,
                                     "radial_low": result.radial_range[0], "radial_high": result.radial_range[1]})
        if self._background is not None:
            bg = self._background
            background = scaled(bg.pattern, bg.thickness_mm / self._thickness_mm)
            result = scaled(subtract(pattern, background), factor)
            self._event("subtracted", {"q": result.radial, "intensity": result.intensity, "sigma": result.sigma,
                                       "standard_factor": factor, "final": final})

    def _standard_factor(self) -> float:
        """The named standard run's factor (known / measured), 1 without one."""
        return self._standard.standard_factor if self._standard else 1.0

    def _event(self, stream: str, data: dict, seq_num: int | None = None) -> None:
        intensity = INTENSITY_UNITS.get(stream, "")
        self.emit_event(stream, data, {**DATA_KEY_UNITS, **self._scan_units, "intensity": intensity, "sigma": intensity},
                        seq_num=seq_num)

def _combined_frame(frames: np.ndarray, max_count) -> tuple[np.ndarray, int]:
    """One frame of an event: the frame itself, or the sum of several (float64) with
    pixels saturated or negative in any of them set to -1 (invalid); and how many pixel
    values of the event's frames are saturated (at or above ``max_count``)."""
    if len(frames) == 1:
        return frames[0], int(np.count_nonzero(frames[0] >= max_count)) if max_count else 0
    total = np.empty(frames.shape[1:])
    saturated = sum_frames(frames, float(max_count) if max_count else np.inf, total)
    return total, int(saturated)


def _monitor(fe: FrameEvent, key: str | None) -> float:
    """Monitor ``key`` of the event; NaN when the run names none, or it is absent or not
    a number (the absolute scale then flags the event naming the monitor)."""
    if key is None:
        return np.nan
    try:
        return float(fe.event["data"][key])
    except (KeyError, TypeError, ValueError):
        return np.nan


#: Units of the derived data keys.
DATA_KEY_UNITS = {"q": "1/nm", "two_theta": "deg", "azimuth": "deg", "intensity_q": "counts/sr", "sigma_q": "counts/sr",
         "intensity_2theta": "counts/sr", "sigma_2theta": "counts/sr", "i0": "counts", "it": "counts",
         "exposure_s": "s", "flux_ph_s": "ph/s", "thickness_mm": "mm", "transmission": "", "standard_factor": "", "standard_factor_sigma": "",
         "deviation_low": "", "deviation_high": "", "radial_low": "1/nm", "radial_high": "1/nm",
         "stage_x": "mm", "stage_y": "mm", "stage_distance": "mm", "arm_angle": "deg", "arm_translation": "mm",
         "saturated_pixels": "pixels"}
#: Intensity units per stream.
INTENSITY_UNITS = {"absolute": "1/cm/sr", "stitched_absolute": "1/cm/sr", "subtracted": "1/cm/sr",
                   "cake": "counts/sr", "stitched": "counts/sr"}

