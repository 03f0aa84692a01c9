"""Chemical compositions and their X-ray scattering factors per atom.

A composition is parsed as PDFgetX3 reads one (``"PbTi0.5Zr0.5O3"``,
``"Pb (TiZr)0.5 O3"``, ``"Pb 1 (Ti Zr) 1/2 O 3"``: spaces ignored, counts may be
omitted, fractional or ``a/b``, groups in parentheses, an element may appear several
times). Atomic form factors f(Q) and incoherent (Compton) scattering functions come
from xraylib (``FF_Rayl``, ``SF_Compt``), which take ``x = sin(theta)/lambda =
Q / (4 pi)`` in 1/A; they are tabulated once per element on a fine Q grid and
interpolated, so that a pattern's averages cost microseconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import xraylib

from ..errors import SampleError

#: Q grid (1/A) on which each element's f and S_inc are tabulated.
TABLE_Q_MAX = 100.0
TABLE_Q_STEP = 0.005
#: Smallest sin(theta)/lambda (1/A) at which xraylib tabulates S_inc.
COMPTON_X_MIN = 1e-3

_TOKEN = re.compile(r"([A-Z][a-z]?)|(\()|(\))|(\d+(?:\.\d*)?(?:/\d+(?:\.\d*)?)?|\.\d+(?:/\d+)?)")


@dataclass(frozen=True)
class Composition:
    """Atoms per formula unit, by element symbol, in formula order.

    Parameters
    ----------
    formula : str
        The formula as given.
    counts : tuple of (str, float)
        ``(element, atoms per formula unit)``, each element once.
    """

    formula: str
    counts: tuple[tuple[str, float], ...]

    @property
    def fractions(self) -> dict[str, float]:
        """Atomic fraction of each element (sums to 1)."""
        total = sum(n for _, n in self.counts)
        return {e: n / total for e, n in self.counts}

    def mean_form_factors(self, q_A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``<f>(Q)`` and ``<f^2>(Q)`` (electrons, electrons^2) per atom at ``q_A`` (1/A)."""
        q = np.asarray(q_A, dtype=float)
        f_mean, f2_mean = np.zeros_like(q), np.zeros_like(q)
        for element, c in self.fractions.items():
            f = _interp(q, _tables(element)[0])
            f_mean += c * f
            f2_mean += c * f * f
        return f_mean, f2_mean

    def incoherent(self, q_A: np.ndarray) -> np.ndarray:
        """Mean incoherent (Compton) scattering function per atom, ``<S_inc>(Q)``
        (electron units), at ``q_A`` (1/A)."""
        q = np.asarray(q_A, dtype=float)
        return sum(c * _interp(q, _tables(e)[1]) for e, c in self.fractions.items())

    def atomic_numbers(self) -> dict[str, int]:
        """Z of each element."""
        return {e: xraylib.SymbolToAtomicNumber(e) for e, _ in self.counts}


def parse_composition(formula: str) -> Composition:
    """Parse a chemical formula as PDFgetX3 does.

    Raises
    ------
    SampleError
        When the formula is empty or malformed, a count is not positive, or an element is
        unknown to xraylib (the error names it).
    """
    text = re.sub(r"\s+", "", str(formula))
    if not text:
        raise SampleError(f"empty composition {formula!r}: give a chemical formula such as 'Ni' or 'SiO2'")
    tokens, pos = [], 0
    for match in _TOKEN.finditer(text):
        if match.start() != pos:
            raise SampleError(f"cannot read composition {formula!r} at {text[pos:]!r}: expected an element "
                              "symbol (capitalised, e.g. 'Ni'), a count or parentheses")
        tokens.append(match)
        pos = match.end()
    if pos != len(text):
        raise SampleError(f"cannot read composition {formula!r} at {text[pos:]!r}")
    stack: list[dict[str, float]] = [{}]
    last: dict[str, float] | None = None  # the element or group a count applies to
    for match in tokens:
        element, opening, closing, number = match.groups()
        if element:
            _atomic_number(element, formula)
            last = {element: 1.0}
            _merge(stack[-1], last)
        elif opening:
            stack.append({})
            last = None
        elif closing:
            if len(stack) == 1:
                raise SampleError(f"unbalanced ')' in composition {formula!r}")
            last = stack.pop()
            _merge(stack[-1], last)
        else:
            if last is None:
                raise SampleError(f"count {number!r} in composition {formula!r} follows no element or group")
            count = _number(number, formula)
            _merge(stack[-1], {e: n * (count - 1.0) for e, n in last.items()})
            last = None
    if len(stack) != 1:
        raise SampleError(f"unbalanced '(' in composition {formula!r}")
    counts = tuple((e, round(n, 10)) for e, n in stack[0].items() if round(n, 10) > 0)
    if not counts:
        raise SampleError(f"composition {formula!r} has no atoms")
    return Composition(str(formula), counts)


def _merge(into: dict[str, float], counts: dict[str, float]) -> None:
    for element, n in counts.items():
        into[element] = into.get(element, 0.0) + n


def _number(text: str, formula: str) -> float:
    numerator, _, denominator = text.partition("/")
    value = float(numerator) / float(denominator) if denominator else float(numerator)
    if not (value > 0 and math.isfinite(value)):
        raise SampleError(f"count {text!r} in composition {formula!r} must be positive")
    return value


def _atomic_number(element: str, formula: str) -> int:
    try:
        return xraylib.SymbolToAtomicNumber(element)
    except ValueError:
        raise SampleError(f"unknown element {element!r} in composition {formula!r}: xraylib has no such "
                          "element (symbols are case sensitive: 'Co' is cobalt, 'CO' carbon and oxygen)") from None


@cache
def _tables(element: str) -> tuple[np.ndarray, np.ndarray]:
    """f and S_inc of ``element`` on the table grid (Q = i * TABLE_Q_STEP)."""
    z = xraylib.SymbolToAtomicNumber(element)
    x = np.arange(0.0, TABLE_Q_MAX + TABLE_Q_STEP / 2, TABLE_Q_STEP) / (4.0 * math.pi)
    f = np.array([xraylib.FF_Rayl(z, float(v)) for v in x])
    # S_inc rises as x^2 from 0; xraylib tabulates it from x = 1e-3 1/A on
    s_inc = np.array([xraylib.SF_Compt(z, float(max(v, COMPTON_X_MIN))) * min(1.0, (v / COMPTON_X_MIN) ** 2)
                      for v in x])
    return f, s_inc


def _interp(q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Linear interpolation in a table on the grid ``i * TABLE_Q_STEP``."""
    return np.interp(q, np.arange(len(table)) * TABLE_Q_STEP, table)
