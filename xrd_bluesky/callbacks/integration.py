"""Live corrected integration of a measurement run, frame by frame.

Per frame: dark subtraction (:mod:`.dark_frames`: the run's ``dark`` stream, or the mean
frame of a dark run of the same exposure named by ``dark_uid``), gain map, mask (detector
gaps, beamstop, the gain map's bad pixels, the frame's negative and saturated pixels),
polarization and absolute solid angle, integrated in q (1/nm) and 2theta (deg) with
Poisson errors (counts/sr), and — when the I0/It monitors, exposure and thickness are
usable (:mod:`.monitors`) — on the absolute scale (1/cm/sr). The frames' sums are fed to
a :class:`~.pattern_accumulation.PatternAccumulator`, which stitches frames at several
detector positions (pyFAI MultiGeometry's definition) into common bins, live whenever
the detector moves on (a stage or a 2theta arm) and finally at the stop, subtracts a
named background run and applies a named standard run's factor.

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
``stitched``, ``stitched_absolute``, ``subtracted`` (when the run names a
               ``background_uid``), ``standard`` (at the stop of a run whose start
               document says ``standard: "water"``): see :mod:`.pattern_accumulation`;
``rejected``   per frame with no usable pixel (all saturated, negative or masked):
               the reason, naming the raw event; the run goes on without it.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import InvalidFrameError, MissingMetadataError, NothingAnalysedError, XRDBlueskyError
from ..frames import FrameEvent, detector_config, detector_position, planned_positions
from ..schema import InstrumentSettings
from ..schema.integration import (
    ABSOLUTE_STREAM,
    CAKE_STREAM,
    DATA_KEY_UNITS,
    INTENSITY_UNITS,
    RADIAL_UNITS,
    REJECTED_STREAM,
    IntegrationParameters,
)
from ..schema.start import BACKGROUND_UID, DARK_STREAM, INTEGRATION, PRIMARY_STREAM, STANDARD_UID, MeasurementStart
from ..science.calibration.geometry_source import GeometrySource
from ..science.gain_map.source import GainMapSource
from ..science.geometry import Poni
from ..science.reduction.absolute_scale import ReferencePattern
from ..science.reduction.corrected_integration import CorrectedIntegrator, prepare_ahead, prepare_together
from ..science.reduction.integration_kernel import sum_frames
from ..science.reduction.masks import beamstop_shadow
from ..science.reduction.multi_geometry import covered_radial_range, detector_coverage
from ..science.reduction.shared_preparations import obtain_together, sharing
from .dark_frames import Darks, RunDark
from .derived import Emit, FrameRunCallback, position_data
from .monitors import Monitors
from .pattern_accumulation import PatternAccumulator

logger = logging.getLogger(__name__)

#: Detector positions whose integrators are kept (their pixel-splitting matrices are the
#: memory): a run at dozens of positions keeps only the latest, however many it visits.
KEPT_POSITIONS = 4


#: Looks up a raw run's :class:`ReferencePattern` by uid.
References = Callable[[str], ReferencePattern]


class LiveIntegration(FrameRunCallback):
    """Integrate each frame of a measurement run into a derived run; stitch and scale them.

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
        self.parameters = IntegrationParameters(npt=npt, cake=cake, beamstop_margin_mm=beamstop_margin_mm,
                                                instrument=instrument)
        self.references = references
        self.darks = darks
        self._integrators: OrderedDict[tuple, dict[str, CorrectedIntegrator]] = OrderedDict()
        self._geometry_notes: dict = {}  # position -> what is wrong with the geometry there ("" if nothing)
        self._scan_units: dict[str, str] = {}
        self._integrated = 0
        self._rejected: list[str] = []

    @property
    def instrument(self) -> InstrumentSettings:
        """The instrument the frames are integrated with (that of :attr:`parameters`)."""
        return self.parameters.instrument

    # -- run lifecycle -------------------------------------------------------
    def start(self, doc):
        parameters = self.parameters.with_options(doc.get(INTEGRATION, {}))
        run = MeasurementStart.read(doc)
        self._energy = run.energy_keV
        self._start = doc
        self._scan_keys = run.scan_keys
        self._monitors = Monitors(run.monitors, run.thickness_mm, self.instrument)
        self._dark = RunDark(self.instrument.dark, announced=run.dark_frames, dark_uid=run.dark_uid, darks=self.darks)
        ponis = [self.geometry.poni(p, self._energy) for p in planned_positions(doc) or [None]]
        self.parameters = replace(parameters, radial_ranges=self._radial_ranges(ponis), monitors=run.monitors,
                                  image_key=run.image_key)
        if sharing():
            self._prepare_ahead(ponis)
        background = self._reference(run.background_uid, BACKGROUND_UID)
        standard = self._reference(run.standard_uid, STANDARD_UID)
        self._patterns = PatternAccumulator(self._event, thickness_mm=run.thickness_mm, background=background,
                                            standard=standard, measured_standard=run.standard)
        self.open_derived(doc, self.parameters.as_dict(),
                          geometry=self.geometry.provenance(),
                          calibration_uid=self.geometry.calibration_uid,
                          gain_map_uid=self.gain_map.gain_map_uid if self.gain_map else None,
                          background_uid=background.uid if background else None,
                          dark_uid=self._dark.uid,
                          standard_uid=standard.uid if standard else None,
                          scan_keys=self._scan_keys, **run.chained)

    def finish(self, parent_stop):
        self._dark.stop_waiting()  # darks announced but never taken: integrate without
        self.frames_arrived()
        if self.frames.unmatched_frames():
            raise MissingMetadataError("frames without events at the end of the run: "
                                       f"{self.frames.unmatched_frames()}")
        for stream, seq_num in self.frames.waiting_events():
            if stream == PRIMARY_STREAM:
                self._reject(seq_num, f"event {seq_num}: its frames were never announced (no datum or stream datum)")
        self._patterns.finish()
        if not self._integrated:
            why = f"{len(self._rejected)} rejected, the first: {self._rejected[0]}" if self._rejected \
                else "the run has no events in its primary stream"
            raise NothingAnalysedError(f"no frame of this run was integrated ({why})")

    def frames_arrived(self) -> None:
        self._dark.stream_frames(self.frames.ready(DARK_STREAM))
        if not self._dark.waiting:
            for frame_event in self.frames.ready(PRIMARY_STREAM):
                self._integrate(frame_event)

    # -- per frame -----------------------------------------------------------
    def _integrate(self, fe: FrameEvent) -> None:
        if fe.frames is None:
            self._reject(fe.seq_num, fe.error)
            return
        self._dark.check_required()
        config = detector_config(fe.descriptor, self.frames.image_key(fe.descriptor))
        position = detector_position(fe.event, self._start)
        poni = self.geometry.poni(position, self._energy)
        if position not in self._geometry_notes:
            self._geometry_notes[position] = self._uncalibrated(position, fe.seq_num)
        self.instrument.check_detector(poni, config["model"], fe.frames.shape[1:])
        max_count = self.instrument.max_count(config["max_count"])
        self._patterns.at_position(position)
        self._dark.check_exposure(config.get("acquire_time"))
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
        self._patterns.add(q, tth_sums)
        pattern = q.result()
        data = {"q": pattern.radial, "intensity_q": pattern.intensity, "sigma_q": pattern.sigma,
                "two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                "dark_subtracted": self._dark.frame is not None, "parent_seq_num": fe.seq_num,
                "saturated_pixels": saturated, "geometry_note": self._geometry_notes[position]}
        if position is not None:
            data.update(position_data(position))
        data.update(self._scan_values(fe))
        exposure, reason = self._monitors.exposure(fe.event, config.get("acquire_time"), len(fe.frames))
        data.update({**self._monitors.readings(fe.event), "exposure_s": exposure.exposure_s if exposure else np.nan,
                     "absolute_ok": exposure is not None, "absolute_reason": reason})
        self._event(PRIMARY_STREAM, data, fe.seq_num)
        if exposure is not None:
            abs_pattern = self._patterns.add_absolute(q, exposure)
            self._event(ABSOLUTE_STREAM, {"q": abs_pattern.radial, "intensity": abs_pattern.intensity,
                                     "sigma": abs_pattern.sigma, "standard_factor": self._patterns.standard_factor,
                                     "transmission": exposure.transmission,
                                     "flux_ph_s": exposure.flux_ph_s, "parent_seq_num": fe.seq_num}, fe.seq_num)
        if "cake" in integrators:
            cake = integrators["cake"].sums(frame).result()
            cos2chi, sin2chi = integrators["cake"].azimuthal_moments
            self._event(CAKE_STREAM, {"q": cake.radial, "azimuth": cake.azimuthal, "intensity": cake.intensity,
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
        self._event(REJECTED_STREAM, {"reason": reason, "parent_seq_num": seq_num}, seq_num)

    def _scan_values(self, fe: FrameEvent) -> dict[str, float]:
        """The raw event's scanned variables other than the stage (e.g. an applied
        strain), with their units noted for the descriptor."""
        values = {}
        for key in self._scan_keys:
            if key in fe.event["data"]:
                values[key] = float(fe.event["data"][key])
                self._scan_units[key] = fe.descriptor["data_keys"][key].get("units") or ""
        return values

    def _integrators_for(self, poni: Poni, n_frames: int, max_count) -> dict[str, CorrectedIntegrator]:
        key = (poni, n_frames)
        if key in self._integrators:
            self._integrators.move_to_end(key)
        else:
            built = self._new_integrators(poni, dark=None if self._dark.frame is None else self._dark.frame * n_frames,
                                          max_count=None if not max_count else max_count * n_frames)
            prepare_together(built.values())
            self._integrators[key] = built
            while len(self._integrators) > KEPT_POSITIONS:
                self._integrators.popitem(last=False)
        return self._integrators[key]

    def _new_integrators(self, poni: Poni, *, dark: np.ndarray | None = None,
                         max_count: float | None = None) -> dict[str, CorrectedIntegrator]:
        """The q, 2theta (and cake) integrators of ``poni``, not prepared yet, with the
        dark (counts) and saturation level (counts) of the frames they will take."""
        parameters = self.parameters
        common = dict(mask=self._static_mask(poni), gain=self.gain_map.gain if self.gain_map is not None else None,
                      polarization_factor=self.instrument.polarization_factor, split=parameters.split, dark=dark,
                      max_count=max_count, prepare=False)
        ranges = parameters.radial_ranges
        built = {unit_name: CorrectedIntegrator(poni, npt=parameters.npt, unit=unit, radial_range=ranges[unit],
                                                **common)
                 for unit_name, unit in (("q", "q_nm^-1"), ("2th", "2th_deg"))}
        if parameters.cake:
            radial, azimuthal = parameters.cake
            built["cake"] = CorrectedIntegrator(poni, npt=radial, npt_azim=azimuthal, unit="q_nm^-1",
                                                radial_range=ranges["q_nm^-1"], **common)
        return built

    def _static_mask(self, poni: Poni) -> np.ndarray | None:
        """Pixels never integrated at ``poni`` (True = bad): the beamstop's shadow (with
        the margin), the instrument's mask and the gain map's bad pixels."""
        beamstop = self.instrument.beamstop
        masks = [beamstop_shadow(beamstop, poni, self.parameters.beamstop_margin_mm) if beamstop is not None else None,
                 self.instrument.mask, self.gain_map.bad if self.gain_map is not None else None]
        masks = [m for m in masks if m is not None]
        return functools.reduce(np.logical_or, masks) if masks else None

    def _prepare_ahead(self, ponis: list[Poni]) -> None:
        """Obtain the beamstop's shadow, the pixel-splitting matrices and the per-pixel
        normalization of every position the run plans (``ponis``) at its start,
        dividing them with the other processes sharing their preparations
        (:mod:`~xrd_bluesky.science.reduction.shared_preparations`), instead of each
        computing them at the position's first frame. A domain error is left for that
        frame to report."""
        beamstop, margin = self.instrument.beamstop, self.parameters.beamstop_margin_mm
        try:
            if beamstop is not None:
                obtain_together(lambda p=p: beamstop_shadow(beamstop, p, margin, wait=False) is not None
                                for p in ponis)
            prepare_ahead(i for poni in ponis for i in self._new_integrators(poni).values())
        except XRDBlueskyError as exc:
            logger.debug("positions not prepared ahead (%s: %s): their first frames prepare them",
                         type(exc).__name__, exc)

    def _radial_ranges(self, ponis: list[Poni]) -> dict[str, tuple[float, float]]:
        """Common q and 2theta ranges of the geometries of every position the run will
        visit (their coverages divided between the processes sharing their preparations)."""
        if sharing():
            obtain_together(lambda p=p, u=u: detector_coverage(p, u, wait=False) is not None
                            for p in ponis for u in RADIAL_UNITS)
        return {unit: covered_radial_range(ponis, unit) for unit in RADIAL_UNITS}

    def _reference(self, uid: str | None, key: str) -> ReferencePattern | None:
        """The reference run ``uid`` the start document names under ``key`` (None: none)."""
        if uid is None:
            return None
        if self.references is None:
            raise MissingMetadataError(f"run names {key}={uid!r} but no catalog is available to look it up")
        return self.references(uid)

    def _event(self, stream: str, data: dict, seq_num: int | None = None) -> None:
        intensity = INTENSITY_UNITS.get(stream, "")
        units = {**DATA_KEY_UNITS, **self._scan_units, "intensity": intensity, "sigma": intensity}
        self.emit_event(stream, data, units, seq_num=seq_num)


def _combined_frame(frames: np.ndarray, max_count) -> tuple[np.ndarray, int]:
    """One frame of an event: the frame itself, or the sum of several (float64) with
    pixels saturated or negative in any of them set to -1 (invalid); and how many pixel
    values of the event's frames are saturated (at or above ``max_count``)."""
    if len(frames) == 1:
        return frames[0], int(np.count_nonzero(frames[0] >= max_count)) if max_count else 0
    total = np.empty(frames.shape[1:])
    saturated = sum_frames(frames, float(max_count) if max_count else np.inf, total)
    return total, int(saturated)
