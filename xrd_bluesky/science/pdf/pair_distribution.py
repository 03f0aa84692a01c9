"""Pair distribution functions from powder patterns: I(Q) -> S(Q), F(Q), G(r).

The ad hoc method of Juhas, Davis, Farrow & Billinge, J. Appl. Cryst. 46, 560 (2013)
(PDFgetX3), with its parameter names:

1. **Background.** ``I_c(Q) = I(Q) - bgscale * I_bg(Q)`` (the background interpolated
   onto the sample's Q).
2. **Structure function.** Per atom, a pattern is ``a [<f^2> + <S_inc> + <f>^2 (S - 1)]``
   plus smooth unknowns (air, container, multiple scattering), with ``<f>``, ``<f^2>``
   and the Compton term ``<S_inc>`` from the composition (xraylib). The scale ``a`` is
   fitted over the upper half of ``[Q_first, qmaxinst]``, where ``S - 1`` averages out,
   and ``S(Q) = 1 + (I_c / a - <f^2> - <S_inc>) / <f>^2``.
3. **Ad hoc correction.** ``F(Q) = Q (S - 1)`` minus the least-squares polynomial of
   degree ``n = floor(qmaxinst * rpoly / pi)`` over ``[Q_first, qmaxinst]``: a polynomial
   of that degree varies no faster in Q than ``pi / rpoly``, so its sine transform lives
   below ``rpoly`` and the correction (whatever the smooth errors it absorbs) changes
   G(r) only at ``r < rpoly``. The polynomial has no constant and no linear term: F(Q)
   starts as ``Q (S(0) - 1)``, which belongs to the structure (it carries the
   ``-4 pi rho0 r`` baseline of G below the first peak), so the correction must vanish
   there to first order; an unconstrained fit removes a third of that baseline on
   simulated data, the constrained one keeps it within 6 % (and changes the real Ni
   G(r) by less than 0.1 %). S(Q) is reported with the same correction (``1 + F/Q``).
4. **Transform.** ``G(r) = (2/pi) int_qmin^qmax F(Q) sin(Q r) dQ`` (optionally times the
   Lorch window ``sin(pi Q/qmax) / (pi Q/qmax)``), by an FFT of F(Q) resampled onto a
   uniform Q grid whose reciprocal r grid contains ``r = k * rstep``.

Input is checked before it is used: a single-point spike (a hot bin, more than
:data:`SPIKE_RATIO` times both neighbours and far outside the pattern's point-to-point
scatter) is replaced by its neighbours' mean and *flagged*; NaN (empty) bins are left
out, and a stretch of the used Q range without data is flagged; a background stronger
than the sample, a ``qmax`` or ``qmaxinst`` beyond the data, non-increasing Q, an unknown
element or a parameter out of range is a named error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from numpy.polynomial.legendre import legvander
from scipy.fft import next_fast_len, rfft

from ...errors import ImplausibleInputError, UsageError
from ..scattering_factors import parse_composition

#: Input formats (PDFgetX3's ``dataformat``): 2theta (deg), Q (1/A), Q (1/nm).
DATA_FORMATS = ("twotheta", "QA", "Qnm")
#: A point more than this many times both its neighbours (or less than 1/this) is a spike ...
SPIKE_RATIO = 3.0
#: ... when it is also this many robust standard deviations off the local second difference.
SPIKE_SIGMAS = 10.0
#: Largest fraction of the points in [qmin, qmaxinst] at which the background may exceed the sample.
MAX_OVERSUBTRACTED_FRACTION = 0.02
#: A stretch without data wider than this many median Q steps is flagged.
MAX_GAP_STEPS = 10
#: Q step (1/A) aimed at when F(Q) is resampled for the transform.
TRANSFORM_Q_STEP = 0.005


@dataclass(frozen=True)
class PDFConfig:
    """Parameters of the transformation, named and defaulted as in PDFgetX3.

    Parameters
    ----------
    composition : str
        Chemical formula of the sample (e.g. ``"Ni"``, ``"Pb (TiZr)0.5 O3"``).
    dataformat : str
        ``"twotheta"`` (deg, needs ``wavelength``), ``"QA"`` (1/A) or ``"Qnm"`` (1/nm).
    wavelength : float, optional
        X-ray wavelength (A), for ``twotheta`` input.
    twothetazero : float
        Position of 2theta = 0 (deg) in the input's 2theta.
    bgscale : float
        Scale of the background intensity subtracted.
    rpoly : float
        r limit (A) of the polynomial correction.
    qmaxinst : float, optional
        Upper Q (1/A) of meaningful data and of the correction fits; the data's last Q
        when not given.
    qmin, qmax : float
        Q range (1/A) of the transform; ``qmax`` None: ``qmaxinst``.
    rmin, rmax, rstep : float
        r grid of G(r) (A).
    lorch : bool
        Multiply F(Q) by the Lorch window before the transform (not in PDFgetX3).
    backgroundfile : str
        Background pattern file (as in a ``pdfgetx3.cfg``; read by the caller).
    """

    composition: str
    dataformat: str = "QA"
    wavelength: float | None = None
    twothetazero: float = 0.0
    bgscale: float = 1.0
    rpoly: float = 0.9
    qmaxinst: float | None = None
    qmin: float = 0.0
    qmax: float | None = None
    rmin: float = 0.0
    rmax: float = 30.0
    rstep: float = 0.01
    lorch: bool = False
    backgroundfile: str = ""

    def as_dict(self) -> dict:
        """Every parameter by name (JSON-compatible)."""
        return asdict(self)

    def updated(self, **changes) -> PDFConfig:
        """A copy with ``changes`` (None values ignored: an option not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def checked(self) -> PDFConfig:
        """Self, after checking every parameter's range (names the bad one)."""
        if self.dataformat not in DATA_FORMATS:
            raise UsageError(f"dataformat {self.dataformat!r}: use one of {', '.join(DATA_FORMATS)}")
        if self.dataformat == "twotheta" and not (self.wavelength and 0.01 <= self.wavelength <= 10.0):
            raise UsageError(f"wavelength {self.wavelength!r} A: 2theta input needs the X-ray wavelength "
                             "(0.01-10 A; --wavelength-A, or 'wavelength' in the configuration)")
        for name in ("rpoly", "rstep"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} = {value!r} must be positive and finite")
        if not (math.isfinite(self.bgscale) and self.bgscale >= 0):
            raise UsageError(f"bgscale = {self.bgscale!r} must not be negative")
        if not (0 <= self.rmin < self.rmax <= 1000):
            raise UsageError(f"r range rmin = {self.rmin!r}, rmax = {self.rmax!r} A: need 0 <= rmin < rmax <= 1000 A")
        if (self.rmax - self.rmin) / self.rstep > 1e6:
            raise UsageError(f"rstep = {self.rstep!r} A gives more than 1e6 points over {self.rmin}-{self.rmax} A")
        for name in ("qmaxinst", "qmax"):
            value = getattr(self, name)
            if value is not None and not (0 < value <= 100):
                raise UsageError(f"{name} = {value!r} 1/A: must be within 0-100 1/A")
        if self.qmin < 0 or (self.qmax is not None and self.qmin >= self.qmax):
            raise UsageError(f"qmin = {self.qmin!r} 1/A must be >= 0 and below qmax = {self.qmax!r} 1/A")
        parse_composition(self.composition)
        return self


@dataclass(frozen=True)
class PDFResult:
    """S(Q), F(Q) and G(r) of one pattern.

    Attributes
    ----------
    q : ndarray
        Q (1/A) of ``sq`` and ``fq``: the data's points up to ``qmaxinst``.
    sq, fq : ndarray
        S(Q) (dimensionless) and F(Q) = Q (S - 1) (1/A), after the correction.
    r, gr : ndarray
        r (A) and G(r) (1/A^2).
    config : PDFConfig
        The parameters used (``qmaxinst`` and ``qmax`` resolved).
    polynomial_degree : int
        Degree of the ad hoc correction.
    scale : float
        Intensity per atom in electron units: the fitted ``a``.
    flags : tuple of str
        What was repaired in the input (spikes replaced, NaN bins dropped), each naming
        the Q values; empty when nothing was.
    """

    q: np.ndarray
    sq: np.ndarray
    fq: np.ndarray
    r: np.ndarray
    gr: np.ndarray
    config: PDFConfig
    polynomial_degree: int
    scale: float
    flags: tuple[str, ...] = field(default_factory=tuple)


def to_q(x: np.ndarray, config: PDFConfig) -> np.ndarray:
    """The input abscissa in Q (1/A) for ``config.dataformat``."""
    x = np.asarray(x, dtype=float)
    if config.dataformat == "QA":
        return x
    if config.dataformat == "Qnm":
        return x / 10.0
    theta = np.radians(x - config.twothetazero) / 2.0
    return 4.0 * math.pi * np.sin(theta) / config.wavelength


def pdf_from_pattern(x: np.ndarray, intensity: np.ndarray, config: PDFConfig,
                     background: tuple[np.ndarray, np.ndarray] | None = None) -> PDFResult:
    """S(Q), F(Q) and G(r) of a pattern (see the module docstring for the method).

    Parameters
    ----------
    x, intensity : ndarray
        The pattern: abscissa in ``config.dataformat`` units (2theta deg, 1/A or 1/nm)
        and intensity (any linear unit).
    config : PDFConfig
        Parameters.
    background : (ndarray, ndarray), optional
        The background pattern, abscissa in the same format as ``x``; subtracted times
        ``config.bgscale``.

    Raises
    ------
    ImplausibleInputError
        Non-increasing or too few points, ``qmax``/``qmaxinst`` beyond the data, a
        background stronger than the sample, no signal.
    UsageError, SampleError
        A parameter out of range, an unknown element.
    """
    config.checked()
    composition = parse_composition(config.composition)
    q, i_c, flags = _clean(to_q(x, config), np.asarray(intensity, dtype=float), "pattern")
    if background is not None:
        q_bg, i_bg, bg_flags = _clean(to_q(background[0], config), np.asarray(background[1], dtype=float),
                                      "background")
        flags += tuple(f"background: {f}" for f in bg_flags)
        if q_bg[0] > q[0] + 1e-9 or q_bg[-1] < min(q[-1], config.qmaxinst or q[-1]) - 1e-9:
            raise ImplausibleInputError(f"the background covers Q {q_bg[0]:.3f}-{q_bg[-1]:.3f} 1/A, "
                                        f"less than the pattern's {q[0]:.3f}-{q[-1]:.3f} 1/A")
        i_c = i_c - config.bgscale * np.interp(q, q_bg, i_bg)
    config = _resolved(config, q)
    inside = q <= config.qmaxinst + 1e-9
    q, i_c = q[inside], i_c[inside]
    flags += _gaps(q, config)
    _check_background(q, i_c, config, background is not None)
    f_mean, f2_mean = composition.mean_form_factors(q)
    smooth = f2_mean + composition.incoherent(q)
    scale = _scale(q, i_c, smooth)
    fq_raw = q * (i_c / scale - smooth) / f_mean**2
    degree = math.floor(config.qmaxinst * config.rpoly / math.pi)
    fq = fq_raw - _smooth_part(q, fq_raw, degree)
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.where(q > 0, 1.0 + fq / q, np.nan)
    r, gr = transform(q, fq, config)
    return PDFResult(q, sq, fq, r, gr, config, degree, scale, flags)


def _clean(q: np.ndarray, intensity: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Drop NaN bins, check Q increases, replace single-point spikes; flags say what was done."""
    if q.shape != intensity.shape or q.ndim != 1:
        raise ImplausibleInputError(f"{what}: abscissa and intensity have shapes {q.shape} and {intensity.shape}")
    flags = []
    finite = np.isfinite(q) & np.isfinite(intensity)  # empty bins (no pixel) are NaN: left out
    q, intensity = q[finite], intensity[finite]
    if len(q) < 20:
        raise ImplausibleInputError(f"{what}: {len(q)} usable points; a PDF needs a pattern of hundreds")
    if np.any(np.diff(q) <= 0):
        k = int(np.argmax(np.diff(q) <= 0))
        raise ImplausibleInputError(f"{what}: Q does not increase at point {k + 1} ({q[k]:.4f} -> {q[k + 1]:.4f} 1/A); "
                                    "check the format (twotheta, QA, Qnm) and that it is one pattern")
    spikes = _spikes(intensity)
    if spikes.size:
        intensity = intensity.copy()
        ratios = [intensity[k] / max(0.5 * (intensity[k - 1] + intensity[k + 1]), 1e-300) for k in spikes]
        intensity[spikes] = 0.5 * (intensity[spikes - 1] + intensity[spikes + 1])
        flags.append(f"{spikes.size} single-point spike(s) replaced by their neighbours' mean at Q = "
                     + ", ".join(f"{q[k]:.3f} 1/A ({ratio:.3g}x)" for k, ratio in zip(spikes, ratios)))
    return q, intensity, tuple(flags)


def _gaps(q: np.ndarray, config: PDFConfig) -> tuple[str, ...]:
    """Flags naming the stretches of [qmin, qmaxinst] without data (F is interpolated over them)."""
    steps = np.diff(q)
    wide = np.flatnonzero((steps > MAX_GAP_STEPS * np.median(steps)) & (q[1:] > config.qmin))
    return tuple(f"no data over Q {q[k]:.3f}-{q[k + 1]:.3f} 1/A (interpolated)" for k in wide)


def _spikes(intensity: np.ndarray) -> np.ndarray:
    """Indices of single-point spikes (up or down) in a positive pattern."""
    left, mid, right = intensity[:-2], intensity[1:-1], intensity[2:]
    excess = mid - 0.5 * (left + right)
    noise = 1.4826 * np.median(np.abs(excess - np.median(excess)))
    far = np.abs(excess) > SPIKE_SIGMAS * max(noise, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = (mid > SPIKE_RATIO * left) & (mid > SPIKE_RATIO * right) & (left > 0) & (right > 0)
        down = (mid * SPIKE_RATIO < left) & (mid * SPIKE_RATIO < right) & (mid > 0)
    return np.flatnonzero(far & (up | down)) + 1


def _resolved(config: PDFConfig, q: np.ndarray) -> PDFConfig:
    """``config`` with qmaxinst and qmax set, checked against the data's Q range."""
    top = float(q[-1])
    qmaxinst = top if config.qmaxinst is None else config.qmaxinst
    qmax = qmaxinst if config.qmax is None else config.qmax
    for name, value in (("qmaxinst", qmaxinst), ("qmax", qmax)):
        if value > top * (1 + 1e-6):
            raise ImplausibleInputError(f"{name} = {value:g} 1/A is beyond the data, which end at Q = {top:.3f} 1/A")
    if qmax > qmaxinst * (1 + 1e-9):
        raise UsageError(f"qmax = {qmax:g} 1/A is above qmaxinst = {qmaxinst:g} 1/A (the limit of meaningful data)")
    if config.qmin >= qmax:
        raise UsageError(f"qmin = {config.qmin:g} 1/A is not below qmax = {qmax:g} 1/A")
    if np.sum(q <= qmaxinst) < 20:
        raise ImplausibleInputError(f"only {int(np.sum(q <= qmaxinst))} points up to qmaxinst = {qmaxinst:g} 1/A")
    return replace(config, qmaxinst=qmaxinst, qmax=qmax)


def _check_background(q: np.ndarray, i_c: np.ndarray, config: PDFConfig, subtracted: bool) -> None:
    """A pattern that is mostly negative after background subtraction is an error."""
    used = (q >= config.qmin) & (q <= config.qmaxinst)
    negative = used & (i_c < 0)
    fraction = negative.sum() / max(used.sum(), 1)
    if fraction > MAX_OVERSUBTRACTED_FRACTION:
        where = q[negative]
        if subtracted:
            raise ImplausibleInputError(
                f"the background x bgscale = {config.bgscale:g} is stronger than the sample at {100 * fraction:.0f} % "
                f"of the points in Q {config.qmin:g}-{config.qmaxinst:g} 1/A (first at {where[0]:.3f}, last at "
                f"{where[-1]:.3f} 1/A): lower bgscale or check that the background matches the sample")
        raise ImplausibleInputError(f"the pattern is negative at {100 * fraction:.0f} % of the points in Q "
                                    f"{config.qmin:g}-{config.qmaxinst:g} 1/A: it is not a measured intensity")


def _scale(q: np.ndarray, i_c: np.ndarray, smooth: np.ndarray) -> float:
    """Least-squares ``a`` of ``i_c ~ a * smooth`` over the upper half of the Q range."""
    upper = q >= 0.5 * (q[0] + q[-1])
    scale = float(np.dot(i_c[upper], smooth[upper]) / np.dot(smooth[upper], smooth[upper]))
    if not (scale > 0 and math.isfinite(scale)):
        raise ImplausibleInputError(f"no scattering signal: the intensity's scale against the composition's "
                                    f"self-scattering is {scale:g} over Q {q[upper][0]:.2f}-{q[-1]:.2f} 1/A")
    return scale


def _smooth_part(q: np.ndarray, fq: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares fit of ``fq`` by ``sum_{k=2..degree} c_k Q^k``: a polynomial that
    vanishes with its slope at Q = 0, where F(Q) = Q (S(0) - 1) is the structure's own."""
    if degree < 2:
        return np.zeros_like(fq)
    x = q / q[-1]
    # Q^2 times Legendre polynomials of degree <= n - 2: the same space, well conditioned
    basis = (x * x)[:, None] * legvander(2.0 * x - 1.0, degree - 2)
    coefficients = np.linalg.lstsq(basis, fq, rcond=None)[0]
    return basis @ coefficients


def transform(q: np.ndarray, fq: np.ndarray, config: PDFConfig) -> tuple[np.ndarray, np.ndarray]:
    """r (A) and G(r) (1/A^2) on ``config``'s r grid: the sine transform of F(Q) (1/A) at
    ``q`` (1/A) over [qmin, qmax] (``config.qmax`` set), by an FFT of F resampled onto a
    uniform Q grid (times the Lorch window when ``config.lorch``)."""
    r_step = config.rstep / math.ceil(config.rstep * config.qmax / math.pi)  # fine enough for qmax
    n = next_fast_len(int(math.ceil(max(math.pi / (r_step * TRANSFORM_Q_STEP), config.rmax / r_step + 2))))
    step = math.pi / (n * r_step)  # Q step whose reciprocal r grid is k * r_step
    grid = np.arange(int(config.qmax / step) + 1) * step
    values = np.interp(grid, q, fq, left=0.0, right=0.0)
    values[grid < config.qmin] = 0.0
    if config.lorch:
        values *= np.sinc(grid / config.qmax)
    # sum_k F_k sin(pi k j / n) = -Im(FFT_2n(F))_j
    spectrum = rfft(values, 2 * n)
    r_fft = np.arange(len(spectrum)) * r_step
    g_fft = -spectrum.imag * (2.0 / math.pi) * step
    r = config.rmin + np.arange(int(round((config.rmax - config.rmin) / config.rstep)) + 1) * config.rstep
    return r, np.interp(r, r_fft, g_fft)


def peak_positions(r: np.ndarray, gr: np.ndarray, min_height: float = -np.inf) -> np.ndarray:
    """r (A) of the local maxima of G(r) higher than ``min_height`` (1/A^2), each refined
    by the parabola through it and its neighbours (exact to ~1e-4 rstep for a peak
    sampled at 10 points per width)."""
    k = np.flatnonzero((gr[1:-1] > gr[:-2]) & (gr[1:-1] >= gr[2:]) & (gr[1:-1] > min_height)) + 1
    a, b, c = gr[k - 1], gr[k], gr[k + 1]
    return r[k] + 0.5 * (a - c) / (a - 2 * b + c) * (r[1] - r[0])
