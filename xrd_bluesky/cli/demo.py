"""``xrd-bluesky demo``: the main job on the simulated beamline and embedded catalog.

Step 1: a CeO2 calibration scan at five detector positions, calibrated live; the
refined geometry is compared with the simulator's truth.
Step 2: a gain-map scan of glass slides at five positions, the gain map computed live
with that calibration and compared with the simulator's true gain.
Step 3: a CeO2 count at three detector positions, integrated live with the calibration
and the gain map; the ring positions found are compared with the calibrant's true 2theta.
Step 4: water (as secondary standard), buffer and a protein-like solute in buffer, each
at three detector positions, stitched live, put on the absolute scale from the ion
chambers, the buffer subtracted; compared with the simulator's true cross-sections.
Step 5: a tensile series of hcp Mg (an unloaded reference, then applied strain up to
6e-3, past yield), peaks fitted live per event and per azimuthal sector; lattice strain
along and across the load and the peak widths compared with the simulator's truth.
Step 6: fcc Ni at 100 keV with the detector at 200 mm, its pair distribution function
G(r) computed live; the peaks against fcc Ni's pair distances and the baseline below the
first neighbour against -4 pi rho0 r.
Step 7: a second simulated beamline with its detector (a Pilatus 300K-W) on a 2theta
arm: a LaB6 calibration scan over the arm's range, calibrated live into one arm model
(compared with the truth at every angle and at angles never measured), then CeO2
counted at 20 arm angles and stitched live into one pattern whose rings are compared
with CeO2's true 2theta.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import bluesky.plan_stubs as bps  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..plans import calibration_scan, gain_map_scan, multi_position_count, strain_series  # noqa: E402
from ..science.calibration.position_models import ArmPosition  # noqa: E402
from ..science.geometry import StagePosition, two_theta_difference_deg  # noqa: E402
from ..science.pdf.pair_distribution import PDFConfig, peak_positions, transform  # noqa: E402
from ..science.reduction.absolute_scale import WATER_LOW_Q_CM_SR
from ..science.reduction.peak_fitting import fit_peak  # noqa: E402
from ..science.reduction.peak_specs import hkl_label  # noqa: E402
from ..science.sim.gain_map_measurement import GAIN_POSITIONS  # noqa: E402
from ..science.sim.samples import solute_cross_section  # noqa: E402
from ..science.units import two_theta_rad, wavelength_m  # noqa: E402
from ..sim_devices import BeamlineConfig, arm_config  # noqa: E402
from .session import Session, build_session  # noqa: E402

logger = logging.getLogger(__name__)

#: Detector-stage positions (x, y, distance in mm) of the demo's calibrant count.
DEMO_POSITIONS = [(0.0, 0.0, 300.0), (20.0, -15.0, 300.0), (-10.0, 10.0, 350.0)]
#: Half-width (deg) of the window in which each ring is fitted.
RING_WINDOW_DEG = 0.12


@dataclass(frozen=True)
class RingCheck:
    """A ring found in an integrated pattern versus the calibrant's true position (deg)."""

    hkl: tuple[int, int, int]
    true_deg: float
    found_deg: float

    @property
    def error_deg(self) -> float:
        return self.found_deg - self.true_deg


def ring_checks(two_theta_deg: np.ndarray, intensity: np.ndarray, sigma: np.ndarray,
                sample, energy_keV: float, n_rings: int = 6) -> list[RingCheck]:
    """Fit the first ``n_rings`` rings of a powder ``sample`` inside the pattern's range."""
    checks = []
    top = np.nanmax(two_theta_deg) - RING_WINDOW_DEG
    for reflection, _two_theta_rad in sample.ring_table(wavelength_m(energy_keV)):
        true_deg = float(np.degrees(two_theta_rad(reflection.d_A, wavelength_m(energy_keV))))
        if true_deg > top or len(checks) == n_rings:
            break
        fit = fit_peak(two_theta_deg, intensity, (true_deg - RING_WINDOW_DEG, true_deg + RING_WINDOW_DEG), sigma=sigma,
                       background="linear")
        if fit.success:
            checks.append(RingCheck(reflection.hkl, true_deg, fit.centre))
    return checks


def run_demo(output: Path, *, directory: Path | None = None, detector: str = "Pilatus2MCdTe") -> dict:
    """Run the demo, print its summary and save a plot in ``output``; return the numbers."""
    output.mkdir(parents=True, exist_ok=True)
    session = build_session(directory=directory, config=BeamlineConfig(detector=detector))
    try:
        calibration = _calibration_step(session)
        gain = _gain_map_step(session)
        results = {**calibration, **gain, **_calibrant_step(session, output), **_absolute_step(session, output),
                   **_tensile_step(session, output), **_pdf_step(session, output)}
    finally:
        session.close()
    session = build_session(directory=directory, config=arm_config())
    try:
        return {**results, **_arm_step(session, output)}
    finally:
        session.close()


def _calibration_step(session: Session) -> dict:
    import time

    bl = session.beamline
    bl.sample_changer.slot.put("CeO2")
    t0 = time.perf_counter()
    (uid,) = session.RE(calibration_scan(bl.detector, bl.stage, "CeO2", monitors=[bl.i0, bl.it],
                                         shutter=bl.source.shutter, energy=bl.source.energy))
    elapsed = time.perf_counter() - t0
    derived = _derived_of(session, uid)
    if derived.stop["exit_status"] != "success":
        raise RuntimeError(f"calibration failed: {derived.stop['reason']}")
    geometry = session.current_geometry()
    truth = bl.true_geometry()
    print(f"step 1: calibration scan {uid} (scan {session.catalog.raw[uid].start['scan_id']}), "
          f"refined live in derived run {derived.start['uid']} ({elapsed:.0f} s for scan and calibration)")
    table = derived["positions"].read()
    worst = np.zeros(3)
    for i in range(len(table["dist"])):
        pos = StagePosition(*(float(table[f"stage_{a}"][i]) for a in ("x", "y", "distance")))
        err = _geometry_error(geometry.model.poni_at(pos), truth.poni_at(pos))
        worst = np.maximum(worst, err)
        print(f"  x={pos.x:+6.1f} y={pos.y:+6.1f} distance={pos.distance:6.1f} mm: residual "
              f"{float(table['residual_rms'][i]):.4f} deg on {int(table['rings'][i])} rings; model vs truth: "
              f"centre {err[0]:.3f} px, distance {err[1]:.4f} %, tilt {err[2]:.4f} deg")
    print(f"  worst: centre {worst[0]:.3f} px (target 0.2), distance {worst[1]:.4f} % (0.05), "
          f"tilt {worst[2]:.4f} deg (0.02); PONI files in {session.catalog.frames_dir.parent / 'calibrations'}")
    return {"calibration_uid": derived.start["uid"], "calibration_worst": tuple(worst)}


def _gain_map_step(session: Session) -> dict:
    bl = session.beamline
    bl.sample_changer.slot.put("glass")
    flux = float(bl.source.flux.get())
    bl.source.flux.put(2.5e12)  # about 1e5 photons per pixel over 5 positions x 4 frames: 0.3 % noise
    try:
        (uid,) = session.RE(gain_map_scan(bl.detector, bl.stage, GAIN_POSITIONS, frames_per_position=4,
                                          exposure=1.0, shutter=bl.source.shutter,
                                          geometry=session.current_geometry().model, beamstop=bl.config.beamstop,
                                          energy=bl.source.energy, sample=bl.sample_changer.sample().metadata()))
    finally:
        bl.source.flux.put(flux)
    derived = _derived_of(session, uid)
    if derived.stop["exit_status"] != "success":
        raise RuntimeError(f"gain map failed: {derived.stop['reason']}")
    source = session.current_gain_map()
    sigma = np.asarray(derived["gain_map"]["gain_sigma"].read())[0]
    truth = bl.detector.response
    normal = ~(source.bad | truth.gaps) & np.isfinite(sigma)
    ratio = source.gain[normal] / truth.gain[normal]
    rms = float(np.std(ratio / np.median(ratio)))
    expected = float(np.sqrt(np.mean(sigma[normal] ** 2)))
    defects = truth.dead | truth.damaged | truth.hot
    print(f"step 2: gain-map scan {uid}, gain map {derived.start['uid']} "
          f"(calibration {derived.start['calibration_uid']})")
    print(f"  gain vs truth: rms error {rms:.4f} (photon-statistics expectation {expected:.4f}); "
          f"defective pixels flagged {int((source.bad & defects).sum())} of {int(defects.sum())}, "
          f"other pixels flagged {int((source.bad & ~defects & ~truth.gaps).sum())}")
    print(f"  files in {session.catalog.frames_dir.parent / 'gain_maps' / derived.start['uid']}")
    return {"gain_map_uid": derived.start["uid"], "gain_rms_error": rms, "gain_rms_expected": expected}


def _calibrant_step(session: Session, output: Path) -> dict:
    bl = session.beamline
    bl.sample_changer.slot.put("CeO2")
    sample = bl.sample_changer.sample()
    energy = float(bl.source.energy.get())
    (uid,) = session.RE(multi_position_count(
        [bl.detector, bl.i0, bl.it], bl.stage, DEMO_POSITIONS, shutter=bl.source.shutter,
        energy=bl.source.energy, sample=sample.metadata()))
    derived = _derived_of(session, uid)
    data = derived["primary"].read()
    print(f"step 3: CeO2 count {uid} (scan {session.catalog.raw[uid].start['scan_id']}), integrated live in "
          f"{derived.start['uid']} with geometry from {derived.start['geometry']['source']} "
          f"{derived.start['calibration_uid'] or ''} and gain map {derived.start['gain_map_uid']}")
    print(f"catalog      {session.catalog.uri.split('?')[0]}  frames in {session.catalog.frames_dir}")
    fig, ax = plt.subplots(figsize=(9, 5))
    worst = 0.0
    for i, position in enumerate(DEMO_POSITIONS):
        tth, inten, sig = (np.asarray(data[k][i]) for k in ("two_theta", "intensity_2theta", "sigma_2theta"))
        checks = ring_checks(tth, inten, sig, sample, energy)
        worst = max([worst] + [abs(c.error_deg) for c in checks])
        print(f"position x={position[0]:+.1f} y={position[1]:+.1f} distance={position[2]:.1f} mm:")
        for c in checks:
            print(f"  ring {c.hkl}: true {c.true_deg:8.4f} deg, found {c.found_deg:8.4f} deg, "
                  f"error {c.error_deg:+.4f} deg")
        ax.plot(tth, inten, lw=0.8, label=f"x={position[0]:+.0f}, y={position[1]:+.0f}, d={position[2]:.0f} mm")
    for _, tth in sample.ring_table(wavelength_m(energy))[:12]:
        ax.axvline(np.degrees(tth), color="k", lw=0.3, ls=":")
    ax.set_xlabel("2theta (deg)")
    ax.set_ylabel("intensity (counts/sr)")
    ax.set_title(f"CeO2 at {energy:.1f} keV, live integration with the live calibration")
    ax.legend()
    plot = _save(fig, output / "demo_calibrant.png")
    print(f"worst ring-position error: {worst:.4f} deg (target 0.02 deg)")
    print(f"plot         {plot}")
    return {"raw_uid": uid, "derived_uid": derived.start["uid"], "worst_ring_error_deg": worst, "plot": plot}


def _absolute_step(session: Session, output: Path) -> dict:
    bl = session.beamline

    def measure(slot: str, md: dict) -> str:
        bl.sample_changer.slot.put(slot)
        (uid,) = session.RE(multi_position_count(
            [bl.detector, bl.i0, bl.it], bl.stage, DEMO_POSITIONS, shutter=bl.source.shutter,
            energy=bl.source.energy, sample=bl.sample_changer.sample().metadata(), md=md))
        return uid

    water = measure("water", {"standard": "water"})
    buffer = measure("buffer", {})
    sample = measure("sample_in_buffer", {"background_uid": buffer, "standard_uid": water})
    factor = float(np.asarray(_derived_of(session, water)["standard"].read()["standard_factor"])[-1])
    derived = _derived_of(session, sample)
    stitched, subtracted = (derived[s].read() for s in ("stitched_absolute", "subtracted"))
    q, inten, sigma = (np.asarray(stitched[k])[-1] for k in ("q", "intensity", "sigma"))
    truth = bl.sample_changer.sample().cross_section_q(q)
    precise = np.isfinite(inten) & (sigma < 0.005 * inten)
    worst = float(np.max(np.abs(inten[precise] / truth[precise] - 1)))
    diff = np.asarray(subtracted["intensity"])[-1]
    solute = solute_cross_section(q)
    strong = np.isfinite(diff) & (solute > 0.1 * WATER_LOW_Q_CM_SR)
    solute_error = float(np.sum(diff[strong]) / np.sum(solute[strong]) - 1)
    print(f"step 4: water {water} (standard), buffer {buffer}, sample in buffer {sample}, "
          f"each at {len(DEMO_POSITIONS)} positions; absolute scale and subtraction in {derived.start['uid']}")
    print(f"  water standard factor {factor:.4f} (1 = the monitors' absolute scale is right)")
    print(f"  sample in buffer (x standard factor) vs true dSigma/dOmega: worst {100 * worst:.2f} % over q "
          f"{q[precise].min():.2f}-{q[precise].max():.2f} 1/nm (target 2 %)")
    print(f"  sample minus buffer vs true solute scattering (q < {q[strong].max():.2f} 1/nm): "
          f"{100 * solute_error:+.2f} %")
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.loglog(q, inten, lw=0.8, label="sample in buffer, stitched (3 positions)")
    ax.loglog(q, truth, "k:", lw=0.8, label="truth")
    ax.loglog(q, diff, lw=0.8, label="minus buffer x standard factor")
    ax.loglog(q, solute, "k--", lw=0.8, label="true solute scattering")
    ax.set_xlabel("q (1/nm)")
    ax.set_ylabel("dSigma/dOmega (1/cm/sr)")
    ax.set_ylim(1e-4, 1.0)
    ax.legend()
    plot = _save(fig, output / "demo_absolute.png")
    print(f"plot         {plot}")
    return {"water_factor": factor, "absolute_worst_rel": worst, "solute_rel": solute_error}


#: Applied strains of the demo's tensile series (Mg yields at 2e-3).
TENSILE_STRAINS = [0.0, 1e-3, 2e-3, 3e-3, 4e-3, 6e-3]
#: The Mg reflections fitted in the tensile series.
TENSILE_PEAKS = {"phase": "Mg", "hkl": [[1, 0, 0], [0, 0, 2], [1, 0, 1]], "model": "pseudo-voigt"}


def _tensile_step(session: Session, output: Path) -> dict:
    bl = session.beamline
    bl.sample_changer.slot.put("Mg")
    session.RE(bps.mv(bl.stage.x, 0.0, bl.stage.y, 0.0, bl.stage.distance, 300.0))
    detectors = [bl.detector, bl.i0, bl.it]
    common = dict(stage=bl.stage, shutter=bl.source.shutter, energy=bl.source.energy,
                  sample=bl.sample_changer.sample().metadata())
    (reference,) = session.RE(strain_series(detectors, bl.sample_changer.strain, [0.0], peaks=TENSILE_PEAKS,
                                            **common))
    (uid,) = session.RE(strain_series(detectors, bl.sample_changer.strain, TENSILE_STRAINS,
                                      peaks={**TENSILE_PEAKS, "d0_uid": reference}, **common))
    bl.sample_changer.strain.put(0.0)
    fits = _derived_of(session, _derived_of(session, uid).start["uid"])
    sectors = fits["sectors"].read()
    tensile = bl.sample_changer.sample().tensile
    applied = np.asarray(TENSILE_STRAINS)
    along_true = np.array([tensile.lattice_strain(a) for a in applied])
    across_true = -tensile.poisson_ratio * along_true
    labels = [hkl_label("Mg", hkl) for hkl in TENSILE_PEAKS["hkl"]]
    along = {k: np.asarray(sectors[f"{k}_strain_loading"]) for k in labels}
    across = {k: np.asarray(sectors[f"{k}_strain_transverse"]) for k in labels}
    worst_along = max(float(np.max(np.abs(along[k] - along_true))) for k in labels)
    worst_across = max(float(np.max(np.abs(across[k] - across_true))) for k in labels)
    # widths along the load (the azimuthal average also widens elastically, as the ring is distorted)
    along_load = int(np.argmin(np.abs(np.asarray(sectors["azimuth"][0]) - tensile.loading_chi_deg)))
    fwhm = {k: np.asarray(sectors[f"{k}_fwhm_q"])[:, along_load] for k in labels}
    print(f"step 5: Mg tensile series {uid} (reference {reference}), peak fits {fits.start['uid']}")
    print(f"  lattice strain along the load vs truth: worst {worst_along:.1e} (target 5e-5); "
          f"across: worst {worst_across:.1e} (target 1e-4)")
    for k in labels:
        print(f"  {k}: along {', '.join(f'{v * 1e3:.3f}' for v in along[k])} (1e-3); "
              f"FWHM along the load {fwhm[k][0]:.4f} -> {fwhm[k][-1]:.4f} 1/nm")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k in labels:
        ax1.plot(applied * 1e3, along[k] * 1e3, "o", label=f"{k} along load")
        ax1.plot(applied * 1e3, across[k] * 1e3, "s", label=f"{k} across")
        ax2.plot(applied * 1e3, fwhm[k], "o-", label=k)
    ax1.plot(applied * 1e3, along_true * 1e3, "k-", lw=0.8, label="truth")
    ax1.plot(applied * 1e3, across_true * 1e3, "k--", lw=0.8)
    ax1.set_xlabel("applied strain (1e-3)")
    ax1.set_ylabel("lattice strain (1e-3)")
    ax1.legend(fontsize="small")
    ax2.set_xlabel("applied strain (1e-3)")
    ax2.set_ylabel("FWHM along the load (1/nm)")
    ax2.legend(fontsize="small")
    fig.tight_layout()
    plot = _save(fig, output / "demo_strain.png")
    print(f"plot         {plot}")
    return {"strain_along_worst": worst_along, "strain_across_worst": worst_across}


#: The demo's total-scattering measurement: 100 keV, the 2M at 200 mm (full rings to Q = 27 1/A).
PDF_ENERGY_KEV = 100.0
PDF_POSITION = (0.0, 0.0, 200.0)
PDF_CONFIG = {"rpoly": 0.9, "qmin": 0.5, "qmax": 26.0, "qmaxinst": 27.0, "rmax": 30.0}
#: fcc Ni shells compared.
PDF_SHELLS = 8


def _pdf_step(session: Session, output: Path) -> dict:
    bl = session.beamline
    energy, flux = float(bl.source.energy.get()), float(bl.source.flux.get())
    bl.source.energy.put(PDF_ENERGY_KEV)
    bl.source.flux.put(1e11)  # the 111 ring just below saturation
    bl.sample_changer.slot.put("Ni")
    sample = bl.sample_changer.sample()
    try:
        (uid,) = session.RE(multi_position_count(
            [bl.detector, bl.i0, bl.it], bl.stage, [PDF_POSITION], num=2, shutter=bl.source.shutter,
            energy=bl.source.energy, sample=sample.metadata(), md={"pdf": PDF_CONFIG}))
    finally:
        bl.source.energy.put(energy)
        bl.source.flux.put(flux)
    pdf = _derived_of(session, _derived_of(session, uid).start["uid"])
    if pdf.stop["exit_status"] != "success":
        raise RuntimeError(f"PDF failed: {pdf.stop['reason']}")
    stitched = pdf["stitched_gr"].read()
    r, g = np.asarray(stitched["r"])[-1], np.asarray(stitched["gr"])[-1]
    # the truth seen through the same Q window: a finite qmax moves a weak shell's maximum beside a strong one
    q = np.asarray(pdf["stitched_sq"].read()["q"])[-1]
    _, windowed = transform(q, sample.reduced_structure_function(q), PDFConfig(sample.composition, **PDF_CONFIG))
    ours, truth = peak_positions(r, g), peak_positions(r, windowed)
    distances, neighbours = sample.pair_distances(8.0)
    print(f"step 6: Ni at {PDF_ENERGY_KEV:.0f} keV {uid}, G(r) live in {pdf.start['uid']} "
          f"(Q {PDF_CONFIG['qmin']}-{PDF_CONFIG['qmax']} 1/A, rpoly {PDF_CONFIG['rpoly']} A)")
    errors = []
    for distance, n in zip(distances[:PDF_SHELLS], neighbours[:PDF_SHELLS]):
        expected = truth[np.argmin(np.abs(truth - distance))]
        found = ours[np.argmin(np.abs(ours - expected))]
        errors.append(found - expected)
        print(f"  shell {distance:6.3f} A ({int(n):2d} neighbours): true G(r) through the Q window peaks at "
              f"{expected:6.3f} A ({expected - distance:+.4f}), live G(r) at {found:6.3f} A, "
              f"error {found - expected:+.4f} A")
    first, sigma = distances[0], sample.shells.arrays()[2][0]
    below = (r > PDF_CONFIG["rpoly"] + 0.1) & (r < first - 3 * sigma)
    slope = float(np.sum(g[below] * r[below]) / np.sum(r[below] ** 2))
    baseline = -4 * np.pi * sample.number_density_A3
    worst = float(np.max(np.abs(errors)))
    print(f"  worst peak error {worst:.4f} A over {len(errors)} shells (target 0.005 A); below the first neighbour "
          f"G(r) = {slope:.3f} r vs -4 pi rho0 r = {baseline:.3f} r ({100 * (slope / baseline - 1):+.1f} %, "
          f"target 10 %)")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(r, g, lw=0.8, label="G(r), live")
    ax.plot(r, sample.true_gr(r), "k:", lw=0.8, label="truth (the sample's G(r))")
    for distance in distances:
        ax.axvline(distance, color="grey", lw=0.3)
    ax.set_xlim(0, 12)
    ax.set_xlabel("r (A)")
    ax.set_ylabel("G(r) (1/A^2)")
    ax.set_title(f"fcc Ni at {PDF_ENERGY_KEV:.0f} keV: G(r) from the live integration (grey: pair distances)")
    ax.legend()
    plot = _save(fig, output / "demo_pdf.png")
    print(f"plot         {plot}")
    return {"pdf_worst_peak_A": worst, "pdf_baseline_rel": float(slope / baseline - 1)}


#: Arm angles (deg) of the demo's calibration scan (an angle where no ring of LaB6 falls on
#: the detector would be skipped and said) and of its stitched count (inside the calibrated range).
ARM_CALIBRATION_ANGLES = tuple(np.round(np.arange(5.0, 40.1, 5.0), 2))
ARM_COUNT_ANGLES = tuple(np.round(np.linspace(10.0, 38.0, 20), 3))
#: Arm angles never measured at which the calibrated model is compared with the truth:
#: between calibration angles, and 1 deg beyond the calibrated range.
ARM_UNMEASURED_ANGLES = (17.5, 32.5, ARM_CALIBRATION_ANGLES[-1] + 1.0)


def _arm_step(session: Session, output: Path) -> dict:
    bl = session.beamline
    bl.sample_changer.slot.put("LaB6")
    (uid,) = session.RE(calibration_scan(bl.detector, bl.arm, "LaB6", [(a,) for a in ARM_CALIBRATION_ANGLES],
                                         shutter=bl.source.shutter, energy=bl.source.energy))
    derived = _derived_of(session, uid)
    if derived.stop["exit_status"] != "success":
        raise RuntimeError(f"arm calibration failed: {derived.stop['reason']}")
    model, truth = session.current_geometry().model, bl.true_geometry()
    table = derived["positions"].read()
    used = int(np.sum(table["used"]))
    print(f"step 7: detector on a 2theta arm: LaB6 at {len(ARM_CALIBRATION_ANGLES)} arm angles {uid}, one arm model "
          f"calibrated live in {derived.start['uid']} from {used} of them (offset {model.offset_deg:.4f} deg, "
          f"scale {model.scale:.5f}; truth {truth.offset_deg} deg, {truth.scale})")
    for angle, note in zip(np.asarray(table["arm_angle"]), np.asarray(table["note"])):
        if note:
            print(f"  arm angle {angle:g} deg skipped: {note}")
    # the PONI along the arm's motion trades against the arm's zero, the sideways tilt against the PONI
    # across: what is determined (and integrated with) is every pixel's 2theta, compared here
    tth_deg = max(two_theta_difference_deg(model.poni_at(ArmPosition(a)), truth.poni_at(ArmPosition(a)))
                  for a in (*ARM_CALIBRATION_ANGLES, *ARM_UNMEASURED_ANGLES))
    pixel_m = truth.reference.detector_model().pixel1
    worst = (np.radians(tth_deg) * truth.reference.dist / pixel_m,
             abs(model.reference.dist / truth.reference.dist - 1) * 100,
             abs(model.scale - truth.scale) * (ARM_CALIBRATION_ANGLES[-1] - ARM_CALIBRATION_ANGLES[0]))
    print(f"  model vs truth at every angle, {len(ARM_UNMEASURED_ANGLES)} never measured: every pixel's 2theta within "
          f"{tth_deg:.5f} deg = {worst[0]:.3f} px of PONI (target 0.2), distance {worst[1]:.4f} % (0.05), arm "
          f"rotation over the scan {worst[2]:.4f} deg (0.02)")
    bl.sample_changer.slot.put("CeO2")
    sample = bl.sample_changer.sample()
    energy = float(bl.source.energy.get())
    (count_uid,) = session.RE(multi_position_count(
        [bl.detector, bl.i0, bl.it], bl.arm, [(a,) for a in ARM_COUNT_ANGLES], shutter=bl.source.shutter,
        energy=bl.source.energy, sample=sample.metadata()))
    stitched = _derived_of(session, count_uid)["stitched"].read()
    tth, inten, sig = (np.asarray(stitched[k])[-1] for k in ("two_theta", "intensity_2theta", "sigma_2theta"))
    checks = ring_checks(tth, inten, sig, sample, energy, n_rings=12)
    ring_worst = max(abs(c.error_deg) for c in checks)
    print(f"  CeO2 at {len(ARM_COUNT_ANGLES)} arm angles {count_uid}, stitched live over "
          f"{np.nanmin(tth):.1f}-{np.nanmax(tth):.1f} deg: {len(checks)} rings, worst error {ring_worst:.4f} deg "
          "(target 0.02)")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(tth, inten, lw=0.6)
    for c in checks:
        ax.axvline(c.true_deg, color="k", lw=0.3, ls=":")
    ax.set_xlabel("2theta (deg)")
    ax.set_ylabel("intensity (counts/sr)")
    ax.set_title(f"CeO2 at {energy:.0f} keV, {len(ARM_COUNT_ANGLES)} arm angles stitched live (dotted: true rings)")
    plot = _save(fig, output / "demo_arm.png")
    print(f"plot         {plot}")
    return {"arm_calibration_worst": tuple(worst), "arm_ring_worst_deg": ring_worst}


def _geometry_error(found, true) -> tuple[float, float, float]:
    """Beam-centre (px), distance (%) and tilt (deg) differences of two geometries."""
    return (float(np.max(np.abs(np.subtract(found.beam_centre_px(), true.beam_centre_px())))),
            abs(found.dist - true.dist) / true.dist * 100,
            float(np.degrees(max(abs(found.rot1 - true.rot1), abs(found.rot2 - true.rot2)))))


def _save(fig, path: Path) -> Path:
    """Save ``fig`` as ``path`` (PNG, 120 dpi), close it and return the path."""
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _derived_of(session: Session, parent_uid: str):
    """The newest derived run whose parent is ``parent_uid``."""
    from tiled.queries import Contains

    results = session.catalog.processed.search(Contains("parent_uids", parent_uid))
    if len(results) == 0:
        raise RuntimeError(f"no derived run for {parent_uid}: see the log for the analysis error")
    return results.values().last()


def add_parser(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="run the demo on the simulated beamline")
    p.add_argument("--output", default="demo_output", help="folder for plots (default: demo_output)")
    p.add_argument("--directory", help="data directory (default: $XRD_BLUESKY_DATA or the user data dir)")
    p.add_argument("--detector", default="Pilatus2MCdTe", help="pyFAI detector model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every recovered number is within its bar, 1 otherwise."""
    result = run_demo(Path(args.output), directory=Path(args.directory) if args.directory else None,
                      detector=args.detector)
    centre_px, distance_pct, tilt_deg = result["calibration_worst"]
    ok = (result["worst_ring_error_deg"] <= 0.02 and centre_px <= 0.2 and distance_pct <= 0.05 and tilt_deg <= 0.02
          and abs(result["water_factor"] - 1) <= 0.02 and result["absolute_worst_rel"] <= 0.02
          and result["pdf_worst_peak_A"] <= 0.005 and abs(result["pdf_baseline_rel"]) <= 0.10
          and all(e <= bar for e, bar in zip(result["arm_calibration_worst"], (0.2, 0.05, 0.02)))
          and result["arm_ring_worst_deg"] <= 0.02)
    return 0 if ok else 1
