"""The real CeO2 Pilatus 1M frame (Dioptas test data) against Dioptas' reference pattern."""

import fabio
import numpy as np
from conftest import realdata

from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction.integration import invalid_pixels
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.reduction.single_frame import integrate_1d


def test_reference_peak_positions_reproduced():
    """Integrated with the reference PONI (on the raw array, see PROVENANCE.md), the
    peak centres of the strongest reflections agree with Dioptas' .xy within 0.005 deg."""
    frame = fabio.open(realdata("dioptas_ceo2", "CeO2_Pilatus1M.tif")).data
    poni = Poni.read(realdata("dioptas_ceo2", "CeO2_Pilatus1M_rawarray.poni"))
    ref = np.loadtxt(realdata("dioptas_ceo2", "CeO2_Pilatus1M.xy"), comments="#")
    ref_tth, ref_i = ref[:, 0], ref[:, 1]
    mask = invalid_pixels(frame, poni)
    ours = integrate_1d(frame, poni, npt=len(ref_tth), unit="2th_deg", mask=mask, polarization_factor=None)
    # the strongest reference peaks, at least 0.5 deg apart
    order = np.argsort(ref_i)[::-1]
    peaks: list[float] = []
    for k in order:
        if all(abs(ref_tth[k] - p) > 0.5 for p in peaks) and 3 < ref_tth[k] < ref_tth.max() - 1:
            peaks.append(ref_tth[k])
        if len(peaks) == 6:
            break
    for p in peaks:
        window = (p - 0.15, p + 0.15)
        fr = fit_peak(ref_tth, ref_i, window, background="linear")
        fo = fit_peak(ours.radial, ours.intensity, window, background="linear")
        assert fr.success and fo.success, (fr.reason, fo.reason)
        assert abs(fo.centre - fr.centre) < 0.005, p
