"""pyFAI's internals that xrd-bluesky relies on (pyFAI 2025 and 2026).

* :func:`csr_matrix_parts`: the CSR matrix an integrator's CSR engine integrated with
  (``integrator.engines[method].engine.lut``).
* :func:`disable_garbage_collection`, :func:`control_points`,
  :func:`set_control_points`, :func:`two_theta_residuals`: a ``SingleGeometry``'s
  ``GeometryRefinement`` (its ``auto_gc`` switch, its ``data`` array of control
  points, ``residu1_wavelength`` and its parameter layout).
* :func:`goniometer_file_versions`, :func:`goniometer_detector`: what
  ``Goniometer.sload`` accepts and how it builds the detector
  (``Goniometer._file_version_1_1``, ``Goniometer._get_detector_from_dict``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyFAI.goniometer import Goniometer, SingleGeometry

from .releases import ReleaseRange

RELEASES = ReleaseRange("pyFAI", "2025.1", "2027", __name__,
                        "engines[method].engine.lut of the CSR engine, GeometryRefinement.auto_gc, .data and "
                        "residu1_wavelength, Goniometer._file_version_1_1 and _get_detector_from_dict")
RELEASES.check()


# -- integration ---------------------------------------------------------------------------
def csr_matrix_parts(integrator, method) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` of the CSR matrix (bins x pixels) pyFAI's CSR engine
    integrated with, for an integration that just ran.

    Parameters
    ----------
    integrator : pyFAI.integrator.azimuthal.AzimuthalIntegrator
        The integrator that ran the integration.
    method : pyFAI.method_registry.IntegrationMethod
        The ``method`` of its result (a CSR method: ``(split, "csr", "cython")``).
    """
    data, indices, indptr = (np.asarray(part) for part in integrator.engines[method].engine.lut)
    return data, indices, indptr


# -- geometry refinement ---------------------------------------------------------------------
def disable_garbage_collection(single: SingleGeometry) -> None:
    """Stop the refinement of ``single`` from running ``gc.collect()`` at every change of
    its parameters (seconds per refinement in a process holding a RunEngine and a Tiled
    server)."""
    single.geometry_refinement.auto_gc = False


def control_points(single: SingleGeometry) -> np.ndarray:
    """The control points the refinement of ``single`` fits: rows ``(d1, d2, ring)``
    (pixel coordinates and ring index)."""
    return single.geometry_refinement.data


def set_control_points(single: SingleGeometry, points: np.ndarray) -> None:
    """Make the refinement of ``single`` fit ``points`` (rows ``(d1, d2, ring)``) from now on."""
    single.geometry_refinement.data = points


def two_theta_residuals(single: SingleGeometry, poni: Sequence[float], wavelength_m: float,
                        points: np.ndarray) -> np.ndarray:
    """2theta (rad) of each control point minus that of its ring, as the refinement of
    ``single`` computes them.

    Parameters
    ----------
    single : SingleGeometry
        Its refinement's calibrant and detector are used.
    poni : sequence of float
        ``dist, poni1, poni2`` (m) and ``rot1, rot2, rot3`` (rad).
    wavelength_m : float
        The wavelength (m) the rings' 2theta are computed for.
    points : array
        Rows ``(d1, d2, ring)``.
    """
    param = [*poni, wavelength_m * 1e10]  # residu1_wavelength takes the wavelength in Angstrom
    return single.geometry_refinement.residu1_wavelength(param, points[:, 0], points[:, 1], points[:, 2])


# -- goniometer files ---------------------------------------------------------------------------
def goniometer_file_versions() -> tuple[str, ...]:
    """The ``content`` values of the goniometer files ``Goniometer.sload`` reads (2 and 1.1)."""
    return Goniometer.file_version, Goniometer._file_version_1_1


def goniometer_detector(content: dict):
    """The pyFAI detector of a goniometer file's ``content``, as ``Goniometer.sload`` builds it.

    Raises
    ------
    Exception
        Whatever pyFAI's detector factory raises on an unknown or malformed detector.
    """
    return Goniometer._get_detector_from_dict(content)
