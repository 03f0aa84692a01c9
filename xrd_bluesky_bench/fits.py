"""``xrd-bluesky bench fits``: single-peak fits per second, ours vs scipy, and their share of the live chain."""

from __future__ import annotations

import time

import numpy as np

from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator
from xrd_bluesky.science.sim.image_formation import (
    DetectorResponse,
    detect,
    expected_photons,
)
from xrd_bluesky.science.sim.library import default_library
from xrd_bluesky.sim_devices.beamline import BeamlineConfig

from .common import best_per_call


def fits(n: int = 2000, points: int = 200) -> dict:
    """Single-peak fits per second (``points`` points, Poisson noise), ours vs the
    notebook method it replaces (``scipy.optimize.minimize`` on an L2 cost) and vs
    ``scipy.optimize.curve_fit``, all on the same patterns."""
    from scipy.optimize import curve_fit, minimize

    from xrd_bluesky.science.reduction.peak_fitting import FOUR_LN2, fit_peak

    rng = np.random.default_rng(0)
    x = np.linspace(9.0, 11.0, points)
    truth = 400.0 * np.exp(-FOUR_LN2 * ((x - 10.03) / 0.12) ** 2) + 60.0
    ys = [rng.poisson(truth).astype(float) for _ in range(n)]
    sigmas = [np.sqrt(np.maximum(y, 1.0)) for y in ys]

    def gauss(x, c, w, h, b):
        return h * np.exp(-FOUR_LN2 * ((x - c) / w) ** 2) + b

    p0 = [x[np.argmax(ys[0])], 0.2, ys[0].max() - 60.0, 60.0]
    out: dict[str, float | int] = {"points": points, "fits": n}
    for model in ("gaussian", "pseudo-voigt"):
        fit_peak(x, ys[0], (9.0, 11.0), sigma=sigmas[0], model=model)  # compile
        t = best_per_call(lambda i, model=model: fit_peak(x, ys[i], (9.0, 11.0), sigma=sigmas[i], model=model), n, 2)
        out[f"fits_per_second_{model.replace('-', '_')}"] = 1.0 / t
    m = max(n // 10, 1)
    t = best_per_call(lambda i: curve_fit(gauss, x, ys[i], p0=p0, sigma=sigmas[i], absolute_sigma=True), m, 2)
    out["fits_per_second_scipy_curve_fit"] = 1.0 / t
    t = best_per_call(lambda i: minimize(lambda p: np.sum((gauss(x, *p) - ys[i]) ** 2), p0,
                                          method="Nelder-Mead"), m, 1)
    out["fits_per_second_scipy_minimize_l2"] = 1.0 / t
    out["speedup_vs_curve_fit"] = out["fits_per_second_gaussian"] / out["fits_per_second_scipy_curve_fit"]
    out["speedup_vs_minimize_l2"] = out["fits_per_second_gaussian"] / out["fits_per_second_scipy_minimize_l2"]
    out.update(_live_fit_share())
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _live_fit_share(detector: str = "Pilatus2MCdTe", events: int = 5) -> dict:
    """Per event of a strain series (Mg on a 2M, 3 peaks, 36 sectors): the time of the
    live peak fits against that of the event's integrations (q and 2theta patterns and
    the cake, as :class:`LiveIntegration` runs them)."""
    from event_model import compose_run

    from xrd_bluesky.callbacks.derived import data_keys
    from xrd_bluesky.callbacks.peak_fits import LivePeakFits
    from xrd_bluesky.plans.strain_series import STRAIN_INTEGRATION

    config = BeamlineConfig(detector=detector)
    poni = config.true_geometry().reference
    response = DetectorResponse.simulate(detector, 1)
    mg = default_library()["Mg"].under_load(3e-3)
    rng = np.random.default_rng(2)
    photons = expected_photons(mg, poni, flux_ph_s=1e11, exposure_s=1.0, beamstop=config.beamstop)
    frames = [detect(photons, response, 1.0, rng) for _ in range(events)]
    npt, split = STRAIN_INTEGRATION["npt"], STRAIN_INTEGRATION["split"]
    npt_cake, npt_azim = STRAIN_INTEGRATION["cake"]
    kw = dict(gain=response.gain, split=split)
    integrators = {"q": CorrectedIntegrator(poni, npt=npt, unit="q_nm^-1", **kw),
                   "2th": CorrectedIntegrator(poni, npt=npt, unit="2th_deg", **kw),
                   "cake": CorrectedIntegrator(poni, npt=npt_cake, npt_azim=npt_azim, unit="q_nm^-1", **kw)}
    results = [{k: integ.integrate(f) for k, integ in integrators.items()} for f in frames]
    t_integrate = best_per_call(lambda i: [integ.sums(frames[i]) for integ in integrators.values()], events, 2)

    bundle = compose_run(metadata={"energy_keV": config.energy_keV, "scan_keys": [],
                                   "peaks": {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]],
                                             "model": "pseudo-voigt"}})
    cos2chi, sin2chi = integrators["cake"].azimuthal_moments

    def event_data(i):
        tth, c = results[i]["2th"], results[i]["cake"]
        return ({"two_theta": tth.radial, "intensity_2theta": tth.intensity, "sigma_2theta": tth.sigma,
                 "parent_seq_num": i + 1},
                {"q": c.radial, "azimuth": c.azimuthal, "intensity": c.intensity, "sigma": c.sigma,
                 "cos2chi": cos2chi, "sin2chi": sin2chi, "parent_seq_num": i + 1})

    descriptors = [bundle.compose_descriptor(name=name, data_keys=data_keys(data, {}))
                   for name, data in zip(("primary", "cake"), event_data(0))]
    docs = [("start", bundle.start_doc)] + [("descriptor", d.descriptor_doc) for d in descriptors]
    for i in range(events):
        for descriptor, data in zip(descriptors, event_data(i)):
            event = descriptor.compose_event(data=data, timestamps={k: 0.0 for k in data}, seq_num=i + 1)
            docs.append(("event", event))
    best = np.inf
    for _ in range(2):
        fitter = LivePeakFits(lambda name, doc: None)
        for name, doc in docs[:3]:
            fitter(name, doc)
        t0 = time.perf_counter()
        for name, doc in docs[3:]:
            fitter(name, doc)
        best = min(best, (time.perf_counter() - t0) / events)
    return {"live_event_integration_ms": 1e3 * t_integrate, "live_event_peak_fits_ms": 1e3 * best,
            "live_event_fits_over_integration": best / t_integrate}
