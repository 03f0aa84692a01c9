"""What is prepared per geometry, shared on disk between processes (what the Dask workers
of one machine do): loaded matrices integrate exactly as built ones, and loaded shadows
and coverages are those computed; damaged or foreign files and dead processes' claims
are never trusted, and integrators prepared together build what no other process is
building first."""

import logging
import multiprocessing
import socket
import threading
import time

import numpy as np
import pytest

from xrd_bluesky.science.detector_pixels import Beamstop, pixel_geometry
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.reduction import corrected_integration, masks, multi_geometry
from xrd_bluesky.science.reduction.corrected_integration import CorrectedIntegrator, prepare_together
from xrd_bluesky.science.reduction.integration import radial_coverage
from xrd_bluesky.science.reduction.masks import beamstop_shadow
from xrd_bluesky.science.reduction.multi_geometry import detector_coverage
from xrd_bluesky.science.reduction.preparation_store import PreparationStore
from xrd_bluesky.science.reduction.shared_preparations import share_preparations

#: A small detector: each matrix builds in well under a second.
PONI = Poni(dist=0.15, poni1=0.02, poni2=0.03, rot1=0.05, rot2=-0.02, wavelength=0.7e-10, detector="Pilatus100k")


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """This process shares its matrices in ``tmp_path`` (memory cache empty); counts the
    matrices it builds."""
    built = []
    real = corrected_integration.pixel_splitting
    monkeypatch.setattr(corrected_integration, "pixel_splitting",
                        lambda *a, **k: built.append(a[3]) or real(*a, **k))
    corrected_integration.clear_splitting_cache()
    share_preparations(tmp_path)
    yield tmp_path, built
    share_preparations(None)
    corrected_integration.clear_splitting_cache()


def shared_key(integrator):
    """The key of ``integrator``'s splitting matrix in the shared store."""
    return (corrected_integration.SHARED_KIND, *integrator._key[0][1:])


def frame():
    rng = np.random.default_rng(5)
    return rng.poisson(50.0, PONI.detector_model().shape).astype(np.int32)


def integrators(**kw):
    mask = np.zeros(PONI.detector_model().shape, bool)
    mask[:20, :30] = True  # a beamstop's corner
    return [CorrectedIntegrator(PONI, npt=500, unit=unit, mask=mask, dark=np.full(mask.shape, 0.5), **kw)
            for unit in ("q_nm^-1", "2th_deg")]


def reference(directory):
    """The integrations with matrices built here, nothing shared (then sharing in
    ``directory`` again, the memory cache empty)."""
    share_preparations(None)
    corrected_integration.clear_splitting_cache()
    results = [i.integrate(frame()) for i in integrators()]
    corrected_integration.clear_splitting_cache()
    share_preparations(directory)
    return results


def assert_identical(results, expected):
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.radial, want.radial)
        np.testing.assert_array_equal(got.intensity, want.intensity)
        np.testing.assert_array_equal(got.sigma, want.sigma)


def test_a_matrix_loaded_from_disk_integrates_exactly_as_one_built_here(shared):
    """Another process's matrices (the memory cache emptied stands for the fresh process):
    loaded, not built again, and the same intensities and sigmas to the last bit."""
    directory, built = shared
    first = [i.integrate(frame()) for i in integrators()]
    assert built == ["q_nm^-1", "2th_deg"]
    assert len(list(directory.glob("*.npz"))) == 3  # the two matrices and the normalization they share
    corrected_integration.clear_splitting_cache()
    assert_identical([i.integrate(frame()) for i in integrators()], first)
    assert len(built) == 2
    assert_identical(reference(directory), first)


@pytest.mark.parametrize("damage", ["truncated", "bytes flipped", "another key's file"])
def test_a_damaged_or_foreign_file_is_built_again_not_used(shared, damage, caplog):
    directory, built = shared
    expected = [i.integrate(frame()) for i in integrators()]
    q_file, tth_file = (PreparationStore(directory).path(shared_key(i)) for i in integrators())
    data = q_file.read_bytes()
    if damage == "truncated":
        q_file.write_bytes(data[: len(data) // 2])
    elif damage == "bytes flipped":  # inside the coefficients: only the CRC-32 tells
        middle = len(data) // 2
        q_file.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    else:
        q_file.write_bytes(tth_file.read_bytes())
    corrected_integration.clear_splitting_cache()
    with caplog.at_level(logging.WARNING):
        assert_identical([i.integrate(frame()) for i in integrators()], expected)
    assert built == ["q_nm^-1", "2th_deg", "q_nm^-1"]
    assert str(q_file) in caplog.text and "computed again" in caplog.text


def test_the_claim_of_a_process_that_died_is_taken_over(shared):
    """A worker killed while building leaves its claim: the next one builds the matrix
    instead of waiting for it forever."""
    directory, built = shared
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    q = integrators(prepare=False)[0]
    claim = PreparationStore(directory).path(shared_key(q)).with_suffix(".claim")
    claim.write_text(f"{socket.gethostname()} {process.pid} {time.time()}")
    q.prepare()
    assert built == ["q_nm^-1"] and not claim.exists()


def test_integrators_prepared_together_build_what_nobody_else_builds_first(shared):
    """While another process holds the claim of the q matrix (here: this test), the
    2theta matrix is built meanwhile, then the q matrix is waited for and loaded once
    the other process has saved it; nothing is built twice."""
    directory, built = shared
    expected = reference(directory)
    built.clear()
    q, tth = integrators(prepare=False)
    store, key = PreparationStore(directory), shared_key(q)
    assert store.claim(key)
    worker = threading.Thread(target=prepare_together, args=([q, tth],))
    worker.start()
    deadline = time.monotonic() + 60
    while not store.path(shared_key(tth)).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert built == ["2th_deg"] and worker.is_alive() and not q.prepared  # 2theta built, q waited for
    other = CorrectedIntegrator(PONI, npt=500, unit="q_nm^-1", mask=q._mask, dark=q._dark, prepare=False)
    store.save(key, corrected_integration.pixel_splitting(
        PONI, 500, None, "q_nm^-1", None, ~other._valid(), "bbox").arrays())  # "the other process" saves it
    store.release(key)
    worker.join(60)
    assert not worker.is_alive() and q.prepared and built == ["2th_deg", "q_nm^-1"]  # the second: "the other's"
    assert_identical([q.integrate(frame()), tth.integrate(frame())], expected)


def test_a_shadow_and_a_coverage_are_computed_once_and_loaded_exactly(shared, monkeypatch):
    """The beamstop's shadow and the detector's coverage, loaded from another process's
    files (the memory emptied stands for the fresh process), are those computed from
    the pixel geometry to the last bit, and neither is computed twice."""
    directory, _ = shared
    beamstop = Beamstop(radius_mm=1.0, arm_width_mm=0.6, arm_azimuth_deg=30.0, distance_mm=40.0)
    expected_shadow = beamstop.shadow(pixel_geometry(PONI), margin_mm=0.5)
    expected_coverage = radial_coverage(PONI, "q_nm^-1")
    assert 0 < expected_shadow.sum() < expected_shadow.size  # the disc and its arm are on this detector
    computed = []
    real = Beamstop.shadow
    monkeypatch.setattr(Beamstop, "shadow", lambda *a: computed.append("shadow") or real(*a))
    for _ in range(2):
        masks._SHADOWS.clear()
        multi_geometry._COVERAGES.clear()
        np.testing.assert_array_equal(beamstop_shadow(beamstop, PONI, 0.5), expected_shadow)
        assert detector_coverage(PONI, "q_nm^-1") == expected_coverage
    assert computed == ["shadow"] and len(list(directory.glob("*.npz"))) == 2



def test_the_integrators_of_one_position_share_its_pixel_corrections():
    """q and 2theta at one position hold one normalization and one dark between them
    (the memory of a position's preparation, not twice it), the same as computed from
    pyFAI's solid angle and polarization."""
    corrected_integration.clear_splitting_cache()
    q, tth = integrators()
    prepared_q, prepared_tth = q._prepared(), tth._prepared()
    assert prepared_q.norm is prepared_tth.norm and prepared_q.dark is prepared_tth.dark
    ai, valid = PONI.integrator(), q._valid()
    shape = valid.shape
    expected = ai.solidAngleArray(shape, absolute=True) * ai.polarization(shape, factor=0.99)
    np.testing.assert_array_equal(prepared_q.norm, np.where(valid, expected, 0.0).ravel())
    np.testing.assert_array_equal(prepared_q.dark, np.where(valid, 0.5, 0.0).ravel())
