"""Live peak fits on the patterns of an integration run: position, width, d-spacing
and lattice strain per event, and per azimuthal sector of the cake.

The raw run's start document says what to fit under ``peaks`` (see
:mod:`xrd_bluesky.science.reduction.peak_specs`); the integration copies it into its derived
run, and this analysis turns that run into a derived run of its own
(``analysis: "peak_fits"``, ``parent_uids``: the integration run).

Derived-run streams, one event per integration event, keys per peak label ``L``:

``primary``  fits of the 2theta pattern: ``L_centre_2theta``, ``L_centre_q``, their
             ``_sigma``, ``L_fwhm_2theta`` (+ ``_sigma``), ``L_fwhm_q``, ``L_height``,
             ``L_area``, ``L_background``, ``L_eta``, ``L_d``, ``L_strain`` (each with
             ``_sigma`` where it has one), ``L_chi2r``, ``L_success``, ``L_reason``;
             plus the raw run's scanned variables (e.g. the applied strain);
``sectors``  fits of every cake sector (arrays over ``azimuth``): ``L_centre_q``,
             ``L_fwhm_q``, ``L_d``, ``L_strain`` (+ ``_sigma``), ``L_success``,
             ``L_reason`` naming the failed sectors, ``L_cos2`` (mean cos^2 of the
             angle to the load over the peak's pixels); the strain along and across the
             load (``L_strain_loading``, ``L_strain_transverse`` + ``_sigma``,
             ``L_directional_ok``) from :func:`directional_strain`.

d0 of each peak, in order of precedence: the reference run named by ``d0_uid``
(per sector for sector strains, when it has them; a peak it never fitted falls
through to the next source), ``d0_A`` given, the phase's
tabulated d-spacing, the first successful fit of this run. The descriptor's
configuration records every peak's window, d0 and its source. A failed fit has
``L_success`` False, the reason, and NaN values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import FitError, MissingMetadataError
from ..schema import integration
from ..schema.peak_fits import (
    CONFIGURATION_UNITS,
    SECTORS_STREAM,
    SUFFIX_UNITS,
    PeakFitParameters,
)
from ..schema.start import ENERGY_KEV, PEAKS, PRIMARY_STREAM, require
from ..science.reduction.directional_strain import directional_strain, sector_cos2
from ..science.reduction.peak_fitting import (
    PeakResult,
    fit_peak,
    lattice_strain,
    peak_position,
)
from ..science.reduction.peak_specs import (
    PeakReference,
    PeakSpec,
    configured_specs,
    find_peak_specs,
)
from ..science.reduction.sector_strain import peak_cos2
from ..science.units import wavelength_m
from .derived import DerivedRunCallback, Emit

#: Looks up the :class:`PeakReference` of a raw run by uid.
PeakReferences = Callable[[str], PeakReference]

class LivePeakFits(DerivedRunCallback):
    """Fit the configured peaks in every pattern of an integration run.

    Parameters
    ----------
    emit : callable
        Receives the derived run's ``(name, doc)``.
    references : callable, optional
        Resolves ``d0_uid`` (a raw reference run) to its measured d0.
    provenance : dict, optional
        Extra start-document keys of the derived run (see :class:`DerivedRunCallback`).
    """

    analysis = "peak_fits"

    def __init__(self, emit: Emit, *, references: PeakReferences | None = None, provenance: dict | None = None):
        super().__init__(emit, provenance=provenance)
        self.references = references
        self._streams: dict[str, dict] = {}
        self._scan: dict[int, dict[str, float]] = {}
        self._first_d: dict[str, tuple[float, float]] = {}

    def start(self, doc):
        require(doc, (PEAKS, ENERGY_KEV), "integration run")
        config = doc[PEAKS]
        self._wavelength = wavelength_m(float(doc[ENERGY_KEV]))
        self._specs: list[PeakSpec] | None = configured_specs(config, self._wavelength) or None
        self.parameters = PeakFitParameters.configured(config)
        self._auto = self.parameters.auto
        self._model, self._background = self.parameters.model, self.parameters.background
        self._loading = self.parameters.loading_azimuth_deg
        self._given_d0 = self.parameters.d0_A
        self._parent_scan_keys = doc.get(integration.SCAN_KEYS, [])
        self._reference: PeakReference | None = None
        if "d0_uid" in config:
            if self.references is None:
                raise MissingMetadataError(f"peaks name d0_uid={config['d0_uid']!r} but no catalog is available")
            self._reference = self.references(config["d0_uid"])
        self.open_derived(doc, self.parameters.as_dict(), raw_uids=doc.get("parent_uids", []),
                          d0_uid=self.parameters.d0_uid, scan_keys=self._parent_scan_keys)

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc

    def event(self, doc):
        descriptor = self._streams[doc["descriptor"]]
        data = doc["data"]
        if descriptor["name"] == PRIMARY_STREAM:
            self._fit_pattern(descriptor, data)
        elif descriptor["name"] == integration.CAKE_STREAM and self._specs:
            self._fit_sectors(descriptor, data)

    def finish(self, parent_stop):
        if not self._specs:
            raise FitError("no peak stood out of the noise in any pattern of the run; "
                           "name the peaks by hkl or d-spacing window")

    # -- 1D ------------------------------------------------------------------
    def _fit_pattern(self, descriptor: dict, data: dict) -> None:
        x, y, s = (np.asarray(data[k], float) for k in ("two_theta", "intensity_2theta", "sigma_2theta"))
        if self._specs is None:
            self._specs = find_peak_specs(x, y, s, self._auto, given_d0=self._given_d0) or None
            if self._specs is None:
                return
        scan = {k: float(data[k]) for k in self._parent_scan_keys if k in data}
        self._scan[int(data["parent_seq_num"])] = scan
        out: dict = {"parent_seq_num": int(data["parent_seq_num"]), **scan}
        for spec in self._specs:
            fit = fit_peak(x, y, spec.window_deg, sigma=s, model=self._model, background=self._background)
            if fit.success and spec.label not in self._first_d:
                d = lattice_strain(fit, self._wavelength, 1.0).d_A
                self._first_d[spec.label] = (d, 0.0)
            d0, d0_sigma, _ = self._d0(spec)
            out.update(_peak_values(spec.label, fit, peak_position(fit, "2th_deg", self._wavelength),
                                    lattice_strain(fit, self._wavelength, d0, "2th_deg", d0_sigma_A=d0_sigma)))
        units = self._units(descriptor, "intensity_2theta", "deg")
        self.emit_event(PRIMARY_STREAM, out, units, configuration={"peaks": self._configuration()})

    # -- per sector ----------------------------------------------------------
    def _fit_sectors(self, descriptor: dict, data: dict) -> None:
        q, azimuth = np.asarray(data["q"], float), np.asarray(data["azimuth"], float)
        intensity, sigma = np.asarray(data["intensity"], float), np.asarray(data["sigma"], float)
        cos2 = sector_cos2(np.asarray(data["cos2chi"], float), np.asarray(data["sin2chi"], float), self._loading)
        out: dict = {"azimuth": azimuth, "parent_seq_num": int(data["parent_seq_num"]),
                     **self._scan.pop(int(data["parent_seq_num"]), {})}
        for spec in self._specs:
            window = tuple(4e-9 * math.pi * math.sin(math.radians(t) / 2) / self._wavelength for t in spec.window_deg)
            d0, d0_sigma = self._sector_d0(spec, len(azimuth))
            fits = [fit_peak(q, i, window, sigma=e, model=self._model, background=self._background)
                    for i, e in zip(intensity, sigma)]
            strains = [lattice_strain(f, self._wavelength, float(a), "q_nm^-1", d0_sigma_A=float(b))
                       for f, a, b in zip(fits, d0, d0_sigma)]
            label = spec.label
            values = {"centre_q": [f.centre for f in fits], "centre_q_sigma": [f.centre_sigma for f in fits],
                      "fwhm_q": [f.fwhm for f in fits], "fwhm_q_sigma": [f.fwhm_sigma for f in fits],
                      "d": [s.d_A for s in strains], "d_sigma": [s.d_sigma_A for s in strains],
                      "strain": [s.strain for s in strains], "strain_sigma": [s.strain_sigma for s in strains]}
            out.update({f"{label}_{k}": np.asarray(v, float) for k, v in values.items()})
            out[f"{label}_success"] = np.array([f.success for f in fits])
            out[f"{label}_reason"] = "; ".join(f"{a:.1f} deg: {f.reason}" for a, f in zip(azimuth, fits)
                                               if not f.success)
            out[f"{label}_cos2"] = peak_cos2(q, window, intensity, cos2, fits)
            both = directional_strain(out[f"{label}_cos2"], out[f"{label}_strain"], out[f"{label}_strain_sigma"])
            out.update({f"{label}_strain_loading": both.loading, f"{label}_strain_loading_sigma": both.loading_sigma,
                        f"{label}_strain_transverse": both.transverse,
                        f"{label}_strain_transverse_sigma": both.transverse_sigma,
                        f"{label}_directional_chi2r": both.reduced_chi2, f"{label}_directional_ok": both.success,
                        f"{label}_directional_reason": both.reason})
        units = {**self._units(descriptor, "intensity", "1/nm"), "azimuth": "deg"}
        self.emit_event(SECTORS_STREAM, out, units, configuration={"peaks": self._configuration()})

    # -- references ----------------------------------------------------------
    def _d0(self, spec: PeakSpec) -> tuple[float, float, str]:
        """d0 (A), its 1-sigma error (A) and where it came from."""
        if self._reference is not None and spec.label in self._reference.d0_A:
            return (*self._reference.d0_A[spec.label], f"reference run {self._reference.uid}")
        if spec.d0_A is not None:
            return spec.d0_A, 0.0, "given"
        if spec.label in self._first_d:
            return (*self._first_d[spec.label], "first fit of this run")
        return float("nan"), float("nan"), "none yet"

    def _sector_d0(self, spec: PeakSpec, sectors: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-sector d0 (A) and errors: the reference run's per-sector values when it
        has the same sectors, else the peak's d0 in every sector."""
        if self._reference is not None:
            per_sector = self._reference.sector_d0_A.get(spec.label)
            if per_sector is not None and len(per_sector[0]) == sectors:
                return per_sector
        d0, d0_sigma, _ = self._d0(spec)
        return np.full(sectors, d0), np.full(sectors, d0_sigma)

    def _configuration(self) -> dict:
        config = {}
        for spec in self._specs:
            d0, d0_sigma, source = self._d0(spec)
            label = spec.label
            config.update({f"{label}_window_low": spec.window_deg[0], f"{label}_window_high": spec.window_deg[1],
                           f"{label}_d0": d0, f"{label}_d0_sigma": d0_sigma, f"{label}_d0_source": source})
        return config

    def _units(self, descriptor: dict, intensity_key: str, radial: str) -> dict[str, str]:
        intensity = descriptor["data_keys"][intensity_key].get("units", "")
        units = {k: descriptor["data_keys"][k].get("units", "") for k in self._parent_scan_keys
                 if k in descriptor["data_keys"]}
        for label in (spec.label for spec in self._specs):
            units.update({f"{label}_{suffix}": u.format(I=intensity, x=radial) for suffix, u in SUFFIX_UNITS.items()})
            units.update({f"{label}_{suffix}": u for suffix, u in CONFIGURATION_UNITS.items()})
        return units


def _peak_values(label: str, fit: PeakResult, position, strain) -> dict:
    values = {"centre_2theta": position.centre_2theta_deg, "centre_2theta_sigma": position.centre_2theta_sigma_deg,
              "centre_q": position.centre_q_nm, "centre_q_sigma": position.centre_q_sigma_nm,
              "fwhm_2theta": fit.fwhm, "fwhm_2theta_sigma": fit.fwhm_sigma, "fwhm_q": position.fwhm_q_nm,
              "height": fit.height, "height_sigma": fit.height_sigma, "area": fit.area, "area_sigma": fit.area_sigma,
              "background": fit.background, "eta": fit.eta, "d": strain.d_A, "d_sigma": strain.d_sigma_A,
              "strain": strain.strain, "strain_sigma": strain.strain_sigma, "chi2r": fit.reduced_chi2}
    out = {f"{label}_{k}": float(v) for k, v in values.items()}
    out[f"{label}_success"] = fit.success
    out[f"{label}_reason"] = fit.reason
    return out
