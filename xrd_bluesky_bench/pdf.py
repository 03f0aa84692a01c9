"""``xrd-bluesky bench pdf``: G(r) ours (FFT) vs the direct sine integral; the real Ni G(r) vs PDFgetX3's."""

from __future__ import annotations

import numpy as np

from .common import best_per_call

#: Q step (1/A) of the direct sine integral the PDF benchmark holds our transform against.
DIRECT_Q_STEP = 0.0005


def pdf(points: int = 3000, repeats: int = 50) -> dict:
    """G(r) of a ``points``-point pattern of the simulator's Ni: the whole reduction
    (ours, an FFT sine transform) against the direct sine integral on the same F(Q) (its
    transform step alone), in time and agreement; and, when the real data
    (``../shared/realdata/pdfstream_ni``) is beside the clone, our G(r) of the Ni
    pattern against the G(r) PDFgetX3 made from it."""
    from xrd_bluesky.science.pdf.pair_distribution import PDFConfig, pdf_from_pattern
    from xrd_bluesky.science.sim.library import default_library

    config = PDFConfig("Ni", rpoly=0.9, qmin=0.5, qmax=24.0, qmaxinst=25.0, rmin=0.0, rmax=30.0, rstep=0.01)
    q = np.linspace(0.3, 25.0, points)
    intensity = default_library()["Ni"].cross_section_q(q)
    result = pdf_from_pattern(q, intensity, config)
    ours = best_per_call(lambda _: pdf_from_pattern(q, intensity, config), repeats, 5)
    fine = np.arange(config.qmin, config.qmax + DIRECT_Q_STEP / 2, DIRECT_Q_STEP)

    def direct(_):  # the defining integral, trapezoids on a fine Q grid, F linear between the points
        f = np.interp(fine, result.q, result.fq)
        return (2 / np.pi) * np.trapezoid(np.sin(np.outer(result.r, fine)) * f, fine, axis=1)

    reference = best_per_call(direct, 1, 2)
    g_direct = direct(0)
    out: dict[str, float | int] = {
        "points": points, "r_points": len(result.r), "pdf_ms_per_pattern": ours * 1e3,
        "direct_transform_ms_per_pattern": reference * 1e3, "speedup_vs_direct_transform": reference / ours,
        "max_abs_diff_vs_direct_rel": float(np.max(np.abs(result.gr - g_direct)) / np.max(np.abs(g_direct)))}
    out.update(_pdfgetx3_agreement())
    for name, value in out.items():
        print(f"{name}: {value:.4g}" if isinstance(value, float) else f"{name}: {value}")
    return out


def _pdfgetx3_agreement() -> dict:
    """Our G(r) of the real Ni pattern vs PDFgetX3's, with PDFgetX3's configuration
    (empty when the real data is not beside the clone): the Pearson correlation over
    1.5-30 A, the first ten peaks' positions (PDFgetX3's peaks above 1 1/A^2) and the
    scale between the two."""
    from pathlib import Path

    from xrd_bluesky.science.pdf.pair_distribution import (
        PDFConfig,
        pdf_from_pattern,
        peak_positions,
    )

    folder = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "pdfstream_ni"
    if not folder.exists():
        return {}
    q, intensity = np.loadtxt(folder / "Ni_chi_file.chi", comments="#").T
    text = (folder / "Ni_gr_file.gr").read_text(encoding="utf-8").split("#### start data")[1]
    r_ref, g_ref = np.loadtxt([line for line in text.splitlines() if line.strip() and not line.startswith("#")]).T
    config = PDFConfig("Ni", rpoly=2.0, qmaxinst=25.0, qmin=0.0, qmax=24.0, rmin=0.0, rmax=60.0, rstep=0.01)
    result = pdf_from_pattern(q, intensity, config)
    window = (r_ref >= 1.5) & (r_ref <= 30.0)
    reference = peak_positions(r_ref, g_ref, min_height=1.0)
    reference = reference[reference > 1.5][:10]
    ours = peak_positions(result.r, result.gr)
    errors = [ours[np.argmin(np.abs(ours - p))] - p for p in reference]
    scale = float(np.dot(result.gr[window], g_ref[window]) / np.dot(result.gr[window], result.gr[window]))
    return {"ni_pearson_vs_pdfgetx3_1.5_30A": float(np.corrcoef(result.gr[window], g_ref[window])[0, 1]),
            "ni_first10_peaks_max_abs_diff_A": float(np.max(np.abs(errors))),
            "ni_first_peak_diff_A": float(errors[0]),
            "ni_pdfgetx3_over_ours_scale": scale, "ni_flags": "; ".join(result.flags)}
