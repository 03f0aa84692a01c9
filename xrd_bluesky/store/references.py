"""Look up what another run provides: a background's or standard's stored absolute
pattern, a dark run's mean frame, a reference run's unstrained d-spacings.

Derived results are taken from what the live analyses made, never from replays, so a
run that names a reference gets the same one live and replayed."""

from __future__ import annotations

import numpy as np

from ..errors import MissingMetadataError
from ..schema import integration, peak_fits
from ..schema.documents import check_uid
from ..schema.start import DARK, PRIMARY_STREAM, PURPOSE
from ..science.reduction.absolute_scale import ReferencePattern
from ..science.reduction.peak_specs import PeakReference, weighted_mean
from .catalog import stored_run
from .derived_runs import current_derived_of


def reference_pattern(processed, raw_uid: str) -> ReferencePattern:
    """The final stitched pattern on the monitors' absolute scale (q in 1/nm, 1/cm/sr;
    any standard factor it was multiplied by taken out) of the newest successful
    integration (made live) of raw run ``raw_uid``, with its thickness and, for a standard run,
    its own standard factor."""
    run = current_derived_of(processed, integration.ANALYSIS, raw_uid)
    if run is None:
        raise MissingMetadataError(f"run {raw_uid} has no successful integration in the catalog")
    if integration.STITCHED_ABSOLUTE_STREAM not in run:
        raise MissingMetadataError(f"integration {run.start['uid']} of run {raw_uid} has no absolute-scale "
                                   "pattern (monitors or thickness were unusable)")
    data = run[integration.STITCHED_ABSOLUTE_STREAM].read()
    last = {key: data[key][-1] for key in ("q", "intensity", "sigma", "standard_factor", "thickness_mm")}
    standard = integration.STANDARD_STREAM
    factor = float(np.asarray(run[standard].read()["standard_factor"])[-1]) if standard in run else None
    return ReferencePattern.from_stitched(raw_uid, last, factor)


def dark_frame(raw, uid: str) -> tuple[np.ndarray, float | None]:
    """Mean frame (counts per frame) of dark run ``uid`` in ``raw`` and its frame
    exposure (s; None if not recorded)."""
    run = stored_run(raw, check_uid(uid, "dark run uid"))
    if run is None:
        raise MissingMetadataError(f"dark run {uid} is not in the catalog")
    if run.start.get(PURPOSE) != DARK:
        raise MissingMetadataError(f"run {uid} is not a dark run (purpose {run.start.get(PURPOSE)!r})")
    descriptor = run["primary"].metadata  # the stream's descriptor
    key = next((k for k, v in descriptor["data_keys"].items() if v.get("external") == "STREAM:"), None)
    if key is None:
        raise MissingMetadataError(f"dark run {uid} has no detector frames")
    frames = np.asarray(run["primary"][key].read(), dtype=np.float64)
    exposure = next((v for c in descriptor.get("configuration", {}).values()
                     for k, v in c.get("data", {}).items() if k.endswith("_acquire_time")), None)
    return frames.reshape(-1, *frames.shape[-2:]).mean(axis=0), exposure


def peak_reference(processed, raw_uid: str) -> PeakReference:
    """d0 of every fitted peak (weighted mean over the events of the newest successful
    live peak fits of raw run ``raw_uid``), per sector too when it was fitted per sector."""
    parent = current_derived_of(processed, integration.ANALYSIS, raw_uid)
    fits = None if parent is None else current_derived_of(processed, peak_fits.ANALYSIS, parent.start["uid"])
    if fits is None:
        raise MissingMetadataError(f"run {raw_uid} has no successful peak fits in the catalog to take d0 from")
    d, d_sigma = peak_fits.D_SUFFIX, peak_fits.D_SIGMA_SUFFIX
    primary = fits[PRIMARY_STREAM].read()
    labels = [k[:-len(d)] for k in primary if k.endswith(d)]
    d0 = {}
    for label in labels:
        mean, sigma = weighted_mean(np.asarray(primary[label + d]), np.asarray(primary[label + d_sigma]))
        if np.isfinite(mean):
            d0[label] = (float(mean), float(sigma))
    sectors = {}
    if peak_fits.SECTORS_STREAM in fits:
        table = fits[peak_fits.SECTORS_STREAM].read()
        for label in labels:
            if label + d in table:
                sectors[label] = weighted_mean(np.asarray(table[label + d]), np.asarray(table[label + d_sigma]))
    return PeakReference(raw_uid, d0, sectors)
