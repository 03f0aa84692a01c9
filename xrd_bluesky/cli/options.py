"""Argument types and option groups shared by the ``xrd-bluesky`` subcommands: each
type refuses an unusable value with a message naming it (argparse exits with status 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..science.geometry import WAVELENGTH_RANGE_A
from ..science.units import HC_KEV_ANGSTROM

#: Accepted photon energy (keV): that of a PONI's wavelength range.
ENERGY_RANGE_KEV = (HC_KEV_ANGSTROM / WAVELENGTH_RANGE_A[1], HC_KEV_ANGSTROM / WAVELENGTH_RANGE_A[0])


def number_in(low: float, high: float, unit: str) -> Callable[[str], float]:
    """argparse type: a finite number in ``[low, high]`` (in ``unit``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} {unit} is outside {low:.4g}-{high:.4g} {unit}")
        return value
    return parse


def whole_number_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """argparse type: a whole number in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} {what} is outside {low}-{high}")
        return value
    return parse


def detector_shape(text: str) -> tuple[int, int]:
    """argparse type of ``--shape``: ``ROWSxCOLS``, e.g. ``1043x981``."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a detector shape is ROWSxCOLS, e.g. 1043x981, not {text!r}") from None
    if not (1 <= rows <= 100_000 and 1 <= cols <= 100_000):
        raise argparse.ArgumentTypeError(f"detector shape {rows}x{cols} is not 1-100000 rows by 1-100000 columns")
    return rows, cols


def max_count(text: str) -> float:
    """argparse type of ``--max-count``: a positive number of counts."""
    return number_in(1e-30, math.inf, "counts")(text)


def add_detector_options(parser: argparse.ArgumentParser) -> None:
    """``--detector``, ``--shape`` and ``--max-count``, for the commands that read frames
    with a PONI."""
    parser.add_argument("--detector", metavar="MODEL",
                        help="pyFAI detector model (e.g. Pilatus1M) when the PONI names none (version-1 PONI, "
                             "Dioptas' generic detector)")
    parser.add_argument("--shape", type=detector_shape, metavar="ROWSxCOLS",
                        help="detector shape when the PONI declares none, e.g. 1043x981")
    parser.add_argument("--max-count", dest="max_count", type=max_count, metavar="COUNTS",
                        help="counts at and above which a pixel is saturated and masked (default: above the "
                             "header's count cut-off, else the largest value of an integer frame type: the "
                             "detectors' bad-pixel markers)")


def add_wavelength_options(parser: argparse.ArgumentParser) -> None:
    """``--energy-keV`` or ``--wavelength-A`` (one required)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--energy-keV", dest="energy_keV", type=number_in(*ENERGY_RANGE_KEV, "keV"),
                       help="photon energy (keV)")
    group.add_argument("--wavelength-A", dest="wavelength_A", type=number_in(*WAVELENGTH_RANGE_A, "A"),
                       help="wavelength (Angstrom)")
