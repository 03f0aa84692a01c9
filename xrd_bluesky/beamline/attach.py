"""Attach xrd-bluesky to a RunEngine a beamline already has.

One call in a profile's startup file, as ``nslsii.configure_base`` is::

    from xrd_bluesky import attach
    xrd = attach(RE, "/etc/bluesky/beamline.toml", catalog="http://tiled:8000")

subscribes the raw writer (critical: a spool that cannot be written stops the scan;
leave it out with ``record_raw=False`` when the profile records raw data itself), the
analysis router (what each run's ``purpose`` asks for; never stops a scan) and the
processed writer. Runs are completed from the beamline description (image key,
stage motors, monitors, energy; the run's own keys win); measurement runs use the
pinned or latest calibration in the catalog, else the description's nominal geometry
(labelled ``nominal``), else they end ``fail`` saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bluesky import RunEngine

from ..callbacks import AnalysisRouter
from ..callbacks.derived import Emit
from ..science.calibration.geometry_source import GeometrySource
from ..science.gain_map.source import GainMapSource
from ..science.reduction.absolute_scale import ReferencePattern
from ..science.reduction.peak_specs import PeakReference
from ..store import Catalog, open_catalog
from ..store.calibrations import geometry_from_calibration, latest_calibration
from ..store.catalog import CatalogUnavailableError
from ..store.gain_maps import gain_map_from_run, latest_gain_map_uid
from ..store.references import dark_frame, peak_reference, reference_pattern
from ..store.writer import SpoolingWriter, processed_writer, raw_writer
from .description import BeamlineDescription, load_beamline

logger = logging.getLogger(__name__)

#: How long (s) a run-start lookup waits for the session's uploads to complete.
SETTLE_TIMEOUT_S = 60.0


@dataclass
class LiveInputs:
    """What live analyses look up in the catalog when a run starts: the current
    calibration and gain map, and the reference, dark and d0 runs that a run names.

    Lookups wait first until the runs this session wrote are in the catalog (a
    calibration or background measured just before is the current one: its upload may
    still run under load), then check that the catalog answers
    (:meth:`~xrd_bluesky.store.catalog.Catalog.online`); while it does not, or while
    uploads do not complete, runs are not analysed (the router logs why).

    Attributes
    ----------
    catalog : Catalog
        Where calibrations, gain maps and references are.
    before_calibration : callable
        The geometry used while the catalog holds no calibration (None: the run's
        detector's nominal geometry from the beamline description).
    geometry : GeometrySource, optional
        A pinned calibration (None: the latest good one).
    gain_map_uid : str, optional
        A pinned gain map (None: the latest good one).
    settle : callable, optional
        ``settle(timeout_s)`` waits until the session's writers uploaded what they
        hold, True if they did (None: nothing to wait for).
    """

    catalog: Catalog
    before_calibration: Callable[[], GeometrySource | None] = lambda: None
    geometry: GeometrySource | None = None
    gain_map_uid: str | None = None
    settle: Callable[[float], bool] | None = None
    _gain_map: GainMapSource | None = field(default=None, repr=False)

    def _catalog(self) -> Catalog:
        """The catalog, once the session's runs are in it and it answers.

        Raises
        ------
        CatalogUnavailableError
            Uploads did not complete within :data:`SETTLE_TIMEOUT_S`, or the server does
            not answer.
        """
        if self.settle is not None and not self.settle(SETTLE_TIMEOUT_S):
            raise CatalogUnavailableError(f"runs of this session are still not in the catalog after "
                                          f"{SETTLE_TIMEOUT_S:g} s of uploading: the current calibration, gain map "
                                          "and references cannot be known (the spool keeps them; replay the run "
                                          "later)")
        return self.catalog.online()

    def current_geometry(self, detector_name: str | None = None) -> GeometrySource | None:
        """The pinned calibration, else the latest good one in the catalog (of the
        described detector ``detector_name``, when given), else
        :attr:`before_calibration`."""
        if self.geometry is not None:
            return self.geometry
        latest = latest_calibration(self._catalog().processed, detector_name)
        return latest if latest is not None else self.before_calibration()

    def current_gain_map(self, detector_name: str | None = None) -> GainMapSource | None:
        """The pinned gain map, else the latest good one in the catalog (of the
        described detector ``detector_name``, when given), else None (arrays are read
        from the catalog once per uid)."""
        uid = self.gain_map_uid or latest_gain_map_uid(self._catalog().processed, detector_name)
        if uid is None:
            return None
        if self._gain_map is None or self._gain_map.gain_map_uid != uid:
            self._gain_map = gain_map_from_run(self._catalog().processed[uid])
        return self._gain_map

    def reference_pattern(self, uid: str) -> ReferencePattern:
        """The stored absolute pattern of background or standard run ``uid``."""
        return reference_pattern(self._catalog().processed, uid)

    def dark_frame(self, uid: str) -> tuple[np.ndarray, float | None]:
        """Mean frame (counts) and frame exposure (s) of dark run ``uid``."""
        return dark_frame(self._catalog().raw, uid)

    def peak_reference(self, uid: str) -> PeakReference:
        """The d0 of peak-fit reference run ``uid``."""
        return peak_reference(self._catalog().processed, uid)


def analysis_router(inputs: LiveInputs, beamline: BeamlineDescription, emit: Emit, *, export_dir: str | Path,
                    **options) -> AnalysisRouter:
    """The live analysis router of a session, an attached profile or a worker: current
    inputs from the catalog (``inputs``), each run completed from the ``beamline``
    description, derived documents to ``emit`` (a processed writer).

    Parameters
    ----------
    inputs : LiveInputs
        Calibration, gain map and reference lookups.
    beamline : BeamlineDescription
        Detectors, nominal geometries, corrections, monitors, frame storage.
    emit : callable
        Receives every derived document.
    export_dir : path
        Where calibrations export PONI files (``calibrations/``) and gain maps their
        images (``gain_maps/``).
    **options
        Further :class:`~xrd_bluesky.callbacks.AnalysisRouter` keywords (``plots``,
        ``provenance``).
    """
    return AnalysisRouter(emit, inputs.current_geometry, setup=beamline.run_setup, export_dir=export_dir,
                          gain_map=inputs.current_gain_map, references=inputs.reference_pattern,
                          darks=inputs.dark_frame, peak_references=inputs.peak_reference, **options)


@dataclass
class Attachment:
    """What :func:`attach` subscribed to a RunEngine, and the live inputs it uses."""

    RE: RunEngine
    beamline: BeamlineDescription
    catalog: Catalog
    inputs: LiveInputs
    router: AnalysisRouter | None = None
    writers: tuple[SpoolingWriter, ...] = ()
    tokens: list[int] = field(default_factory=list)
    owns_catalog: bool = False

    def current_geometry(self) -> GeometrySource | None:
        """The geometry the next measurement of the (only) detector will use: the
        pinned or latest calibration, else the nominal geometry, else None."""
        detector = self.beamline.detector()
        geometry = self.inputs.current_geometry(detector.name)
        if geometry is None:
            nominal = detector.nominal_model()
            geometry = None if nominal is None else GeometrySource(nominal, "nominal")
        return geometry

    def use_calibration(self, uid: str | None) -> GeometrySource | None:
        """Pin the calibration that later analyses use (``None``: the latest good one)."""
        self.inputs.geometry = None if uid is None else geometry_from_calibration(self.catalog.processed[uid])
        return self.inputs.geometry

    def use_gain_map(self, uid: str | None) -> None:
        """Pin the gain map later integrations apply (``None``: the latest good one)."""
        self.inputs.gain_map_uid = uid

    def current_gain_map(self) -> GainMapSource | None:
        """See :meth:`LiveInputs.current_gain_map` (of the description's detector)."""
        return self.inputs.current_gain_map(self.beamline.detector().name)

    def close(self) -> None:
        """Unsubscribe from the RunEngine, upload what the writers still hold (runs that
        cannot be stay in the spool for ``xrd-bluesky sync``) and, when :func:`attach`
        opened the catalog, close it."""
        for token in self.tokens:
            self.RE.unsubscribe(token)
        self.tokens.clear()
        for writer in self.writers:
            writer.close()
        if self.owns_catalog:
            self.catalog.close()


def attach(RE: RunEngine, beamline: BeamlineDescription | str | Path, *, catalog: Catalog | str | None = None,
           record_raw: bool = True, analyse: bool = True, plots: bool = False,
           directory: str | Path | None = None) -> Attachment:
    """Subscribe xrd-bluesky's writers and live analyses to an existing RunEngine.

    Parameters
    ----------
    RE : RunEngine
        The profile's RunEngine.
    beamline : BeamlineDescription or path
        The beamline description (a TOML file is loaded and validated).
    catalog : Catalog or str, optional
        An open :class:`~xrd_bluesky.store.Catalog`, the URI of a Tiled server (API key
        from ``TILED_API_KEY``), or None: the embedded catalog in ``directory``,
        serving frames from the description's storage roots.
    record_raw : bool
        Record raw runs into the catalog (False when the profile records them itself).
    analyse : bool
        Analyse runs live and record the derived runs.
    plots : bool
        Plot peak fits live.
    directory : path, optional
        Data directory: embedded catalog, spool, exported PONI files and gain maps
        (default ``$XRD_BLUESKY_DATA`` or the user's data directory).

    Returns
    -------
    Attachment
        ``current_geometry()``, ``use_calibration(uid)``, ``use_gain_map(uid)``, ``close()``.

    Raises
    ------
    BeamlineDescriptionError
        The description file is missing or invalid (the key named).
    """
    description = beamline if isinstance(beamline, BeamlineDescription) else load_beamline(beamline)
    owns = not isinstance(catalog, Catalog)
    if owns:
        catalog = open_catalog(catalog, directory=directory, storage_roots=description.storage_roots)
    export_dir = Path(directory) if directory is not None else catalog.spool_dir.parent
    handle = Attachment(RE, description, catalog, LiveInputs(catalog), owns_catalog=owns)
    writers = []
    if record_raw:
        writers.append(raw_writer(catalog))
        handle.tokens.append(RE.subscribe(writers[-1]))  # critical: a spool that cannot be written stops the scan
    if analyse:
        writers.append(processed_writer(catalog))
        handle.router = analysis_router(handle.inputs, description, writers[-1], export_dir=export_dir, plots=plots)
        handle.tokens.append(RE.subscribe(handle.router))
    handle.writers = tuple(writers)
    handle.inputs.settle = lambda timeout_s: all(w.flush(timeout_s) for w in handle.writers)
    logger.info("xrd-bluesky attached to %r: beamline %s, catalog %s (raw %s, analysis %s)", RE, description.name,
                catalog.uri.split("?")[0], "recorded" if record_raw else "not recorded", "on" if analyse else "off")
    return handle
