"""``xrd-bluesky demo``: the main job on the simulated beamline and embedded catalog.

Step 1: a CeO2 count at three detector positions with live integration; the ring
positions found in the derived runs are compared with the calibrant's true 2theta.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .plans import multi_position_count  # noqa: E402
from .science.peaks import fit_gaussian  # noqa: E402
from .science.units import two_theta_rad, wavelength_m  # noqa: E402
from .session import Session, build_session  # noqa: E402
from .sim_devices import BeamlineConfig  # noqa: E402

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
    for reflection, tth in sample.ring_table(wavelength_m(energy_keV)):
        true_deg = float(np.degrees(two_theta_rad(reflection.d_A, wavelength_m(energy_keV))))
        if true_deg > top or len(checks) == n_rings:
            break
        fit = fit_gaussian(two_theta_deg, intensity, (true_deg - RING_WINDOW_DEG, true_deg + RING_WINDOW_DEG), sigma)
        if fit.success:
            checks.append(RingCheck(reflection.hkl, true_deg, fit.centre))
    return checks


def run_demo(output: Path, *, directory: Path | None = None, detector: str = "Pilatus2MCdTe") -> dict:
    """Run the demo, print its summary and save a plot in ``output``; return the numbers."""
    output.mkdir(parents=True, exist_ok=True)
    session = build_session(directory=directory, config=BeamlineConfig(detector=detector))
    try:
        return _calibrant_step(session, output)
    finally:
        session.close()


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
    print(f"raw run      {uid}  (scan {session.catalog.raw[uid].start['scan_id']})")
    print(f"derived run  {derived.start['uid']}  geometry: {derived.start['geometry']['source']}")
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
    ax.set_ylabel("intensity (counts per PONI-pixel solid angle)")
    ax.set_title(f"CeO2 at {energy:.1f} keV, live integration at three detector positions")
    ax.legend()
    plot = output / "demo_calibrant.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    print(f"worst ring-position error: {worst:.4f} deg (target 0.02 deg)")
    print(f"plot         {plot}")
    return {"raw_uid": uid, "derived_uid": derived.start["uid"], "worst_ring_error_deg": worst, "plot": plot}


def _derived_of(session: Session, parent_uid: str):
    """The newest derived run whose parent is ``parent_uid``."""
    from tiled.queries import Contains

    results = session.catalog.processed.search(Contains("parent_uids", parent_uid))
    if len(results) == 0:
        raise RuntimeError(f"no derived run for {parent_uid}: see the log for the analysis error")
    return results.values().last()
