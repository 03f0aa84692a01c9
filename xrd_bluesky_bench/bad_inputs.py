"""A corpus of bad inputs to every file command, built from the simulator, and how the
commands answer them: a named error, a warning, a silent result or an unexpected error.

``xrd-bluesky bench inputs`` runs it and prints the table; the tests assert that no
answer is silent or unexpected. Each case is a good command line with one input made
bad in one way, so that an answer that is not an error or a warning is a silent wrong
result of that one input.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

#: Detector of the corpus: large enough for real rings, small enough to be quick.
DETECTOR = "Pilatus1M"
#: Photon energy of the corpus frames (keV).
ENERGY_KEV = 17.0
#: A real Ni total-scattering pattern (NSLS-II XPD, Q in 1/A), used for ``pdf`` when ../shared is beside the clone.
REAL_NI_PATTERN = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "pdfstream_ni" / "Ni_chi_file.chi"
#: Q (1/A) of the real Ni pattern's one-point spike, repaired in the good pattern and put back in a bad one.
SPIKE_Q_A = 15.87
#: Wavelength (A) of the real Ni pattern, to write it in 2theta.
NI_WAVELENGTH_A = 0.1671
#: The ``pdfgetx3.cfg`` of the corpus: that of PDFgetX3's G(r) of the real Ni pattern.
PDFGETX3_CFG = """[DEFAULT]
dataformat = QA
backgroundfile =
outputtype = gr
mode = xray
composition = Ni
rpoly = 2.0
qmaxinst = 25.0
qmin = 0.0
qmax = 24.0
rmin = 0.0
rmax = 60.0
rstep = 0.01
"""
#: Detector of the arm set: a strip of few pixels, on a vertical 2theta arm.
ARM_DETECTOR = "Pilatus300kw"
#: Column of the arm angle (deg) in the arm set's positions CSV.
ARM_COLUMN = "tth_deg"
#: Arm readings (deg) of the arm set's frames that its positions CSV lists ...
ARM_ANGLES = (0.0, 8.0, 16.0, 24.0)
#: ... and of one more frame, which it does not list: beyond the calibrated range.
ARM_BEYOND_DEG = 30.0


@dataclass(frozen=True)
class Case:
    """One bad input: the command line and what is wrong with it."""

    command: str
    label: str
    argv: list[str]


@dataclass(frozen=True)
class Outcome:
    """How a command answered a case: ``kind`` is ``"named error"`` (exit 1 or 2 with
    a domain error or a usage message), ``"warning"`` (exit 0 with a plausibility
    warning), ``"silent"`` (exit 0 without one) or ``"unexpected"`` (an error that is
    not a domain error); ``seconds`` from the call to the answer."""

    case: Case
    status: int
    kind: str
    message: str
    seconds: float


@dataclass(frozen=True)
class GoodFiles:
    """The good inputs the cases spoil (paths as strings); ``arm_*`` are those of a
    detector on a 2theta arm, ``arm_beyond`` a frame of it that ``arm_positions`` does
    not list."""

    frame: str
    poni: str
    dark: str
    mask: str
    gain: str
    pattern: str
    gain_frames: list[str]
    gain_ponis: list[str]
    pdf_pattern: str
    pdf_config: str
    arm_frames: list[str]
    arm_beyond: str
    arm_positions: str
    arm_guess: str
    arm_model: str


def _write_tif(path: Path, data: np.ndarray) -> str:
    import fabio

    fabio.tifimage.TifImage(data=data).write(str(path))
    return str(path)


def _write_edf(path: Path, data: np.ndarray, header: dict | None = None) -> str:
    import fabio

    fabio.edfimage.EdfImage(data=data, header=header or {}).write(str(path))
    return str(path)


#: Offset of the corpus frames and darks (counts), as an integrating detector has, so
#: that a dark of the wrong exposure changes the result.
OFFSET_COUNTS = 200


def good_files(directory: Path) -> GoodFiles:
    """Render and write the good inputs into ``directory``: a CeO2 frame (with an
    offset) and its PONI, dark, beamstop mask and gain map, its integrated pattern, a
    glass gain-map set at two positions, a Ni total-scattering pattern (:func:`ni_pattern`)
    with its ``pdfgetx3.cfg``, and the arm set (:func:`_arm_set`)."""
    from xrd_bluesky.cli.integrate import write_xye
    from xrd_bluesky.science.detector_pixels import pixel_geometry
    from xrd_bluesky.science.reduction.single_frame import integrate_1d
    from xrd_bluesky.science.sim.gain_map_measurement import simulate_gain_map_set
    from xrd_bluesky.science.sim.image_formation import (
        DetectorResponse,
        detect,
        expected_photons,
    )
    from xrd_bluesky.science.sim.library import default_library
    from xrd_bluesky.science.units import wavelength_m
    from xrd_bluesky.sim_devices.beamline import BeamlineConfig

    config = BeamlineConfig(detector=DETECTOR)
    geometry = config.true_geometry().with_wavelength(wavelength_m(ENERGY_KEV))
    poni = geometry.poni_at(geometry.reference_position)
    response = DetectorResponse.simulate(DETECTOR, 1)
    rng = np.random.default_rng(1)
    photons = expected_photons(default_library()["CeO2"], poni, flux_ph_s=1e11, exposure_s=1.0,
                               beamstop=config.beamstop)
    offset = OFFSET_COUNTS + rng.normal(0.0, 3.0, response.shape)
    frame = (detect(photons, response, 1.0, rng) + offset).astype(np.int32)
    dark = (OFFSET_COUNTS + rng.normal(0.0, 3.0, response.shape)).astype(np.int32)
    shadow = config.beamstop.shadow(pixel_geometry(poni), margin_mm=1.0)
    gain = np.where(response.gain > 0, response.gain, np.nan).astype(np.float32)
    pattern = integrate_1d(frame, poni, npt=2000, unit="2th_deg", dark=dark.astype(np.float32), mask=shadow)
    write_xye(directory / "ceo2.xye", pattern, {})
    gain_set = simulate_gain_map_set(config.true_geometry(), config.beamstop, detector=DETECTOR,
                                     positions=((0.0, 0.0, 300.0), (15.0, 12.0, 300.0)), frames=1)
    frames, ponis = [], []
    for i, position in enumerate(gain_set.positions):
        folder = directory / f"glass{i}"
        folder.mkdir(exist_ok=True)
        frames.append(_write_tif(folder / "f.tif", (position.mean_frame + gain_set.dark).astype(np.float32)))
        ponis.append(str(position.poni.write(directory / f"glass{i}.poni")))
    return GoodFiles(frame=_write_tif(directory / "ceo2.tif", frame), poni=str(poni.write(directory / "ceo2.poni")),
                     dark=_write_tif(directory / "dark.tif", dark),
                     mask=_write_tif(directory / "mask.tif", shadow.astype(np.uint8)),
                     gain=_write_tif(directory / "gain.tif", gain), pattern=str(directory / "ceo2.xye"),
                     gain_frames=frames, gain_ponis=ponis,
                     pdf_pattern=_write_pattern(directory / "ni.chi", *ni_pattern()),
                     pdf_config=_write_text(directory / "pdfgetx3.cfg", PDFGETX3_CFG), **_arm_set(directory))


def _arm_set(directory: Path) -> dict:
    """Render and write the arm set and return its :class:`GoodFiles` fields by name:
    LaB6 frames of a :data:`ARM_DETECTOR` on a vertical arm (reading 0.25 deg off its
    rotation, 0.15 % fast) at :data:`ARM_ANGLES` and :data:`ARM_BEYOND_DEG` as TIFFs in
    ``directory/arm``, the positions CSV of the former beside them, a rough guess PONI
    at reading 0 (1 % in distance, PONI 0.5 and 0.8 mm off) and the true model,
    calibrated over :data:`ARM_ANGLES`, as goniometer JSON."""
    from xrd_bluesky.science.calibration.position_models import (
        ArmModel,
        ArmPosition,
        write_goniometer_json,
    )
    from xrd_bluesky.science.geometry import Poni, detector_model
    from xrd_bluesky.science.sim.image_formation import (
        DetectorResponse,
        detect,
        expected_photons,
    )
    from xrd_bluesky.science.sim.library import default_library
    from xrd_bluesky.science.units import wavelength_m

    folder = directory / "arm"
    folder.mkdir(exist_ok=True)
    detector = detector_model(ARM_DETECTOR)
    rows, cols = detector.shape
    reference = Poni(0.200, rows * detector.pixel1 / 2 + 0.3e-3, cols * detector.pixel2 / 2 - 1.1e-3,
                     rot1=math.radians(0.4), wavelength=wavelength_m(ENERGY_KEV), detector=ARM_DETECTOR)
    truth = ArmModel(reference, plane="vertical", offset_deg=0.25, scale=1.0015,
                     calibrated_range_deg=(min(ARM_ANGLES), max(ARM_ANGLES)))
    response = DetectorResponse.simulate(ARM_DETECTOR, 7)
    frames = []
    for i, angle in enumerate((*ARM_ANGLES, ARM_BEYOND_DEG)):
        photons = expected_photons(default_library()["LaB6"], truth.poni_at(ArmPosition(angle)), flux_ph_s=1e11,
                                   exposure_s=1.0, beamstop=None)
        frames.append(_write_tif(folder / f"lab6_{i}.tif", detect(photons, response, 1.0, np.random.default_rng(i))))
    guess = replace(reference, dist=0.202, poni1=reference.poni1 - 0.5e-3, poni2=reference.poni2 + 0.8e-3)
    return {"arm_frames": frames[:-1], "arm_beyond": frames[-1],
            "arm_positions": _write_positions(folder / "positions.csv", zip(frames[:-1], ARM_ANGLES)),
            "arm_guess": str(guess.write(directory / "arm_guess.poni")),
            "arm_model": str(write_goniometer_json(truth, directory / "arm.json"))}


def _write_positions(path: Path, rows, column: str = ARM_COLUMN) -> str:
    """Write a positions CSV of ``(frame, angle)`` rows, each frame by its name (in the
    CSV's folder), the angles in ``column``."""
    path.write_text("\n".join([f"file,{column}", *(f"{Path(frame).name},{angle}" for frame, angle in rows)]) + "\n")
    return str(path)


def ni_pattern() -> tuple[np.ndarray, np.ndarray]:
    """Q (1/A) and intensity of Ni: the real XPD pattern with its one-point spike
    repaired when ../shared is beside the clone, else :func:`fcc_ni_intensity`."""
    from xrd_bluesky.cli.fit_peaks import read_pattern

    if not REAL_NI_PATTERN.exists():
        q = np.arange(0.5, 30.0, 0.02)
        return q, fcc_ni_intensity(q)
    pattern = read_pattern(REAL_NI_PATTERN)
    intensity = pattern.intensity.copy()
    k = int(np.argmin(np.abs(pattern.radial - SPIKE_Q_A)))
    intensity[k] = 0.5 * (intensity[k - 1] + intensity[k + 1])
    return pattern.radial, intensity


def fcc_ni_intensity(q_A: np.ndarray, a_A: float = 3.524, sigma_A: float = 0.07, size_A: float = 10.0) -> np.ndarray:
    """Total scattering of fcc Ni per atom (electron units, times 100) at ``q_A`` (1/A):
    ``<f^2> + <S_inc> + <f>^2 F(Q) / Q`` with F(Q) of the neighbour shells (Debye) of a
    crystal of Gaussian extent ``size_A`` (A) and thermal width ``sigma_A`` (A), cell ``a_A`` (A)."""
    from xrd_bluesky.science.scattering_factors import parse_composition

    r_max = 3.5 * size_A  # where the Gaussian extent is below 1e-5
    cells = np.arange(-int(r_max / a_A) - 1, int(r_max / a_A) + 2)
    corners = np.stack(np.meshgrid(cells, cells, cells), -1).reshape(-1, 3)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    distances = np.linalg.norm((corners[:, None] + basis).reshape(-1, 3) * a_A, axis=1)
    shells, counts = np.unique(np.round(distances[(distances > 0) & (distances < r_max)], 6), return_counts=True)
    fq = np.sin(np.outer(q_A, shells)) @ (counts * np.exp(-(shells / size_A) ** 2) / shells)
    fq *= np.exp(-0.5 * (sigma_A * q_A) ** 2)
    ni = parse_composition("Ni")
    f_mean, f2_mean = ni.mean_form_factors(q_A)
    return 100.0 * (f2_mean + ni.incoherent(q_A) + f_mean**2 * fq / q_A)


def _write_pattern(path: Path, x: np.ndarray, intensity: np.ndarray, radial: str = "q_A^-1 (1/A)") -> str:
    """Write a two-column pattern with a ``#`` header naming its radial unit."""
    np.savetxt(path, np.column_stack([x, intensity]), fmt="%.8g", header=f"xrd-bluesky corpus\nradial: {radial}")
    return str(path)


def _write_text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _poni_variant(good: str, path: Path, drop: tuple[str, ...] = (), **values) -> str:
    """The PONI file ``good`` with the keys of ``values`` set and those of ``drop``
    removed, written to ``path``."""
    lines = []
    for line in Path(good).read_text().splitlines():
        key = line.split(":", 1)[0].strip()
        if key in drop:
            continue
        lines.append(f"{key}: {values.pop(key)}" if key in values else line)
    path.write_text("\n".join(lines + [f"{k}: {v}" for k, v in values.items()]) + "\n")
    return str(path)


def _poni_value(good: str, key: str) -> float:
    for line in Path(good).read_text().splitlines():
        if line.split(":", 1)[0].strip() == key:
            return float(line.split(":", 1)[1])
    raise KeyError(key)


def _bad_ponis(good: str, d: Path) -> dict[str, str]:
    """PONI files each wrong in one way, by label."""
    v = {k: _poni_value(good, k) for k in ("Distance", "Poni1", "Poni2", "Wavelength")}
    (d / "poni_dir").mkdir(exist_ok=True)
    (d / "empty.poni").write_text("")
    (d / "garbage.poni").write_bytes(bytes(range(256)) * 4)
    v1 = d / "v1.poni"
    v1.write_text("\n".join(f"{k}: {val}" for k, val in (("PixelSize1", 0.000172), ("PixelSize2", 0.000172),
                                                          *v.items(), ("Rot1", 0), ("Rot2", 0), ("Rot3", 0))) + "\n")
    mm = {k: v[k] * 1e3 for k in ("Distance", "Poni1", "Poni2")}
    return {
        "missing PONI": str(d / "absent.poni"),
        "PONI is a directory": str(d / "poni_dir"),
        "empty PONI": str(d / "empty.poni"),
        "binary garbage PONI": str(d / "garbage.poni"),
        "PONI lengths in mm": _poni_variant(good, d / "mm.poni", **mm),
        "PONI distance 0": _poni_variant(good, d / "d0.poni", Distance=0),
        "PONI distance negative": _poni_variant(good, d / "dneg.poni", Distance=-0.2),
        "PONI distance 100 km": _poni_variant(good, d / "dfar.poni", Distance=1e5),
        "PONI distance NaN": _poni_variant(good, d / "dnan.poni", Distance="nan"),
        "PONI wavelength 0": _poni_variant(good, d / "w0.poni", Wavelength=0),
        "PONI wavelength in A": _poni_variant(good, d / "wA.poni", Wavelength=v["Wavelength"] * 1e10),
        "PONI without wavelength": _poni_variant(good, d / "nowl.poni", drop=("Wavelength",)),
        "PONI without distance": _poni_variant(good, d / "nodist.poni", drop=("Distance",)),
        "PONI rotation in degrees": _poni_variant(good, d / "rotdeg.poni", Rot1=90.0),
        "PONI unknown detector": _poni_variant(good, d / "unknown.poni", Detector="Pilatus7M"),
        "PONI detector config not JSON": _poni_variant(good, d / "badjson.poni", Detector="Detector",
                                                       Detector_config="{pixel1: 1"),
        "version-1 PONI without detector shape": str(v1),
        "PONI of another detector": str(_other_detector_poni(good, d / "other.poni")),
    }


def _other_detector_poni(good: str, path: Path):
    from xrd_bluesky.science.geometry import Poni

    poni = Poni.read(good)
    return replace(poni, detector="Pilatus2M", poni1=0.12, poni2=0.12).write(path)


def _bad_frames(good: GoodFiles, d: Path) -> dict[str, str]:
    """Frame files each wrong in one way, by label."""
    import fabio
    import h5py

    frame = fabio.open(good.frame).data
    raw = Path(good.frame).read_bytes()
    (d / "frame_dir").mkdir(exist_ok=True)
    (d / "empty.tif").write_bytes(b"")
    (d / "noise.tif").write_bytes(np.random.default_rng(0).bytes(100_000))
    (d / "cut.tif").write_bytes(raw[: len(raw) // 2])
    (d / "text.edf").write_text("this is not an image\n")
    cbf = d / "cut.cbf"
    fabio.cbfimage.CbfImage(data=frame).write(str(d / "whole.cbf"))
    cbf.write_bytes((d / "whole.cbf").read_bytes()[:200])
    with h5py.File(d / "nodata.h5", "w") as f:
        f["/entry/other"] = frame
    with h5py.File(d / "four_d.h5", "w") as f:
        f["/entry/data/data"] = np.zeros((2, 2, 8, 8), np.int32)
    return {
        "missing frame": str(d / "absent.tif"),
        "frame is a directory": str(d / "frame_dir"),
        "empty frame file": str(d / "empty.tif"),
        "random bytes as TIFF": str(d / "noise.tif"),
        "truncated TIFF": str(d / "cut.tif"),
        "CBF cut inside its header": str(cbf),
        "text file as EDF": str(d / "text.edf"),
        "HDF5 without /entry/data/data": str(d / "nodata.h5"),
        "HDF5 frames of 4 dimensions": str(d / "four_d.h5"),
        "transposed frame": _write_tif(d / "transposed.tif", np.ascontiguousarray(frame.T)),
        "cropped frame": _write_tif(d / "cropped.tif", frame[:-10]),
        "frame saturated everywhere (0xFFFFFFFF)": _write_tif(d / "saturated.tif",
                                                              np.full(frame.shape, 0xFFFFFFFF, np.uint32)),
        "frame of NaN": _write_tif(d / "nan.tif", np.full(frame.shape, np.nan, np.float32)),
        "frame of negative counts": _write_tif(d / "negative.tif", -np.abs(frame).astype(np.int32) - 1),
        "frame with 5 % marker pixels": _write_tif(d / "markers.tif", _with_markers(frame)),
        **_bad_eiger_masters(frame, d),
    }


def _bad_eiger_masters(frame: np.ndarray, d: Path) -> dict[str, str]:
    """Eiger master files (``/entry/data/data_00000N`` external links to data files)
    each wrong in one way, by label: a linked data file missing, no data link at all,
    data files of frames of two shapes."""
    import h5py

    def master(name: str, links: list[str]) -> str:
        with h5py.File(d / f"{name}_master.h5", "w") as f:
            f.require_group("/entry/data")
            for i, link in enumerate(links, start=1):
                f[f"/entry/data/data_{i:06d}"] = h5py.ExternalLink(link, "/entry/data/data")
        return str(d / f"{name}_master.h5")

    for name, frames in (("eiger_data_000001.h5", frame[None]), ("eiger_cropped_000002.h5", frame[None, :-10])):
        with h5py.File(d / name, "w") as f:
            f["/entry/data/data"] = frames
    return {
        "Eiger master whose data file is missing": master("missing", ["eiger_data_000001.h5", "absent_000002.h5"]),
        "Eiger master without data links": master("empty", []),
        "Eiger data files of two frame shapes": master("mixed", ["eiger_data_000001.h5", "eiger_cropped_000002.h5"]),
    }


def _with_markers(frame: np.ndarray) -> np.ndarray:
    """``frame`` as uint32 with 5 % of its pixels at the 0xFFFFFFFF bad-pixel marker."""
    out = np.clip(frame, 0, None).astype(np.uint32)
    out.ravel()[np.random.default_rng(0).choice(out.size, out.size // 20, replace=False)] = 0xFFFFFFFF
    return out


def _bad_corrections(good: GoodFiles, d: Path) -> dict[str, tuple[str, str]]:
    """(option, file) pairs of darks, gain maps and masks each wrong in one way."""
    import fabio

    dark = fabio.open(good.dark).data
    gain = fabio.open(good.gain).data
    mask = fabio.open(good.mask).data.astype(bool)
    shape = dark.shape
    mostly = np.ones(shape, np.uint8)
    mostly[: shape[0] * 2 // 3] = 0
    return {
        "dark of ten times the exposure": ("--dark", _write_tif(d / "dark10.tif", dark * 10)),
        "dark of another shape": ("--dark", _write_tif(d / "dark_small.tif", dark[:100, :100])),
        "truncated dark": ("--dark", _truncated(good.dark, d / "dark_cut.tif")),
        "gain map in counts": ("--gain", _write_tif(d / "gain_counts.tif", gain * 1000)),
        "gain map of zeros": ("--gain", _write_tif(d / "gain_zero.tif", np.zeros(shape, np.float32))),
        "gain map of another shape": ("--gain", _write_tif(d / "gain_small.tif", gain[:, :100])),
        "inverted mask": ("--mask", _write_tif(d / "mask_inverted.tif", (~mask).astype(np.uint8))),
        "mask of all pixels": ("--mask", _write_tif(d / "mask_all.tif", np.ones(shape, np.uint8))),
        "mask of a third of the pixels": ("--mask", _write_tif(d / "mask_third.tif", mostly)),
        "mask of another shape": ("--mask", _write_tif(d / "mask_small.tif", mask[:10].astype(np.uint8))),
    }


def _truncated(good: str, path: Path) -> str:
    raw = Path(good).read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return str(path)


def _exposure_pair(good: GoodFiles, d: Path) -> tuple[str, str]:
    """A frame (1 s) and a dark (10 s) as EDF files whose headers say their exposure."""
    import fabio

    frame = _write_edf(d / "frame_1s.edf", fabio.open(good.frame).data, {"ExposureTime": "1.0"})
    dark = _write_edf(d / "dark_10s.edf", fabio.open(good.dark).data, {"ExposureTime": "10.0"})
    return frame, dark


def _bad_cifs(d: Path) -> dict[str, str]:
    """CIF files each wrong in one way (from the bundled Si)."""
    from xrd_bluesky.science.dfxrm.cif_structure import resolve_cif

    text = resolve_cif("Si").read_text()
    lines = text.splitlines()
    site = next(i for i, line in enumerate(lines) if line.split() and line.split()[0] == "Si1")
    duplicate = "\n".join(lines[: site + 1] + [lines[site].replace("Si1", "Si2", 1)] + lines[site + 1:])
    radians = text
    for key in ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"):
        radians = "\n".join(f"{key} 1.5708" if line.startswith(key) else line for line in radians.splitlines())
    negative_u = "\n".join(f"{line} -0.05" if i == site else
                           line + "\n_atom_site_U_iso_or_equiv" if line.strip() == "_atom_site_occupancy" else line
                           for i, line in enumerate(lines))
    out = {}
    for label, body in (("CIF with a site listed twice", duplicate), ("CIF cell angles in radians", radians),
                        ("CIF with a negative U_iso", negative_u)):
        path = d / f"{label.replace(' ', '_')}.cif"
        path.write_text(body + "\n")
        out[label] = str(path)
    out["missing CIF"] = str(d / "absent.cif")
    return out


def corpus(good: GoodFiles, d: Path) -> list[Case]:
    """Every bad-input case of the file commands, from the good files ``good``; bad
    files are written into ``d``."""
    out = str(d / "out")
    integrate = ["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "-o", out]
    cases = []
    for label, poni in _bad_ponis(good.poni, d).items():
        cases.append(Case("integrate", label, ["integrate", good.frame, "--poni", poni, "-o", out]))
        cases.append(Case("calibrate", label, ["calibrate", good.frame, "--calibrant", "CeO2", "--energy-keV",
                                               str(ENERGY_KEV), "--guess", poni, "-o", str(d / "cal.poni")]))
        cases.append(Case("gain-map", label, ["gain-map", "--frames", good.gain_frames[0], "--poni", poni,
                                              "--frames", good.gain_frames[1], "--poni", good.gain_ponis[1],
                                              "-o", str(d / "gain_out.tif")]))
    for label, frame in _bad_frames(good, d).items():
        cases.append(Case("integrate", label, ["integrate", frame, "--poni", good.poni, "-o", out]))
        cases.append(Case("calibrate", label, ["calibrate", frame, "--calibrant", "CeO2", "--energy-keV",
                                               str(ENERGY_KEV), "--guess", good.poni, "-o", str(d / "cal.poni")]))
    for label, (option, path) in _bad_corrections(good, d).items():
        cases.append(Case("integrate", label, [*integrate[:4], *(integrate[4:6] if option != "--dark" else []),
                                               option, path, "-o", out]))
    frame_1s, dark_10s = _exposure_pair(good, d)
    cases.append(Case("integrate", "dark of another exposure (headers)",
                      ["integrate", frame_1s, "--poni", good.poni, "--dark", dark_10s, "-o", out]))
    (d / "a_file").write_text("")
    for label, extra in {
        "10 million bins": ["--npt", "10000000"], "0 bins": ["--npt", "0"], "bins not a number": ["--npt", "many"],
        "unknown unit": ["--unit", "r_mm"], "polarization 2": ["--polarization", "2"],
        "negative saturation level": ["--max-count", "-5"], "shape not ROWSxCOLS": ["--shape", "big"],
        "shape that contradicts the PONI": ["--shape", "1000x1000"],
        "detector of another pixel size": ["--detector", "Eiger1M"],
        "unknown detector option": ["--detector", "Pilatus7M"],
    }.items():
        cases.append(Case("integrate", label, [*integrate, *extra]))
    cases.append(Case("integrate", "output directory is a file", [*integrate[:-1], str(d / "a_file")]))
    cases.append(Case("integrate", "output under a file", [*integrate[:-1], str(d / "a_file" / "out")]))
    cases.append(Case("integrate", "the same frame twice", [integrate[0], good.frame, *integrate[1:]]))
    calibrate = ["calibrate", good.frame, "--calibrant", "CeO2", "--dark", good.dark, "--guess", good.poni]
    for label, extra in {
        "energy 0": ["--energy-keV", "0", "-o", str(d / "c.poni")],
        "negative energy": ["--energy-keV", "-17", "-o", str(d / "c.poni")],
        "energy 1 MeV": ["--energy-keV", "1000", "-o", str(d / "c.poni")],
        "wavelength 0": ["--wavelength-A", "0", "-o", str(d / "c.poni")],
        "output into a missing folder": ["--energy-keV", str(ENERGY_KEV), "-o", str(d / "missing" / "c.poni")],
        "output is a directory": ["--energy-keV", str(ENERGY_KEV), "-o", str(d)],
        "mask of another shape": ["--energy-keV", str(ENERGY_KEV), "--mask", str(d / "mask_small.tif"),
                                  "-o", str(d / "c.poni")],
        "largest residual 0": ["--energy-keV", str(ENERGY_KEV), "--max-residual-deg", "0", "-o", str(d / "c.poni")],
    }.items():
        cases.append(Case("calibrate", label, [*calibrate, *extra]))
    cases.append(Case("calibrate", "unknown calibrant", [*_set(calibrate, "--calibrant", "Unobtainium"),
                                                         "--energy-keV", str(ENERGY_KEV), "-o", str(d / "c.poni")]))
    cases.append(Case("calibrate", "CeO2 frame told it is Si", [*_set(calibrate, "--calibrant", "Si"),
                                                                "--energy-keV", str(ENERGY_KEV),
                                                                "-o", str(d / "c.poni")]))
    cases.append(Case("calibrate", "CeO2 frame told it is LaB6", [*_set(calibrate, "--calibrant", "LaB6"),
                                                                  "--energy-keV", str(ENERGY_KEV),
                                                                  "-o", str(d / "c.poni")]))
    gain = ["gain-map", "--frames", good.gain_frames[0], "--poni", good.gain_ponis[0],
            "--frames", good.gain_frames[1], "--poni", good.gain_ponis[1]]
    for label, argv in {
        "swapped PONIs": ["gain-map", "--frames", good.gain_frames[0], "--poni", good.gain_ponis[1],
                          "--frames", good.gain_frames[1], "--poni", good.gain_ponis[0]],
        "identical PONIs": ["gain-map", "--frames", good.gain_frames[0], "--poni", good.gain_ponis[0],
                            "--frames", good.gain_frames[1], "--poni", good.gain_ponis[0]],
        "truncated frame": ["gain-map", "--frames", _truncated(good.gain_frames[0], d / "glass_cut.tif"),
                            "--poni", good.gain_ponis[0], "--frames", good.gain_frames[1],
                            "--poni", good.gain_ponis[1]],
        "glob matching nothing": ["gain-map", "--frames", str(d / "nothing*.tif"), "--poni", good.gain_ponis[0],
                                  "--frames", good.gain_frames[1], "--poni", good.gain_ponis[1]],
        "one PONI for two positions": gain[:-2],
        "one position only": gain[:5],
        "inverted mask": [*gain, "--mask", str(d / "mask_inverted.tif"), "--mask", str(d / "mask_inverted.tif")],
    }.items():
        cases.append(Case("gain-map", label, [*argv, "-o", str(d / "gain_out.tif")]))
    cases.append(Case("gain-map", "output as PNG", [*gain, "-o", str(d / "gain.png")]))
    cases.append(Case("gain-map", "output into a missing folder", [*gain, "-o", str(d / "missing" / "g.tif")]))
    cases += _pattern_cases(good, d)
    cases += _pdf_cases(good, d)
    cases += _other_cases(d)
    cases += _arm_cases(good, d)
    cases += _strain_cases(good, d)
    cases += _monitor_cases(good, d)
    cases += _ingest_cases(d)
    return cases


def _set(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with the value after ``option`` replaced."""
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value."""
    i = argv.index(option)
    return [*argv[:i], *argv[i + 2:]]


def _arm_lines(good: GoodFiles, d: Path) -> tuple[list[str], list[str]]:
    """The good ``integrate --stitch`` and ``calibrate --positions`` command lines of the arm set."""
    stitch = ["integrate", "--stitch", "--goniometer", good.arm_model, "--positions", good.arm_positions,
              "--arm", ARM_COLUMN, "-o", str(d / "arm_out")]
    calibrate = ["calibrate", "--positions", good.arm_positions, "--arm", ARM_COLUMN, "--calibrant", "LaB6",
                 "--energy-keV", str(ENERGY_KEV), "--guess", good.arm_guess, "-o", str(d / "arm_cal.json")]
    return stitch, calibrate


def _bad_positions(good: GoodFiles) -> dict[str, str]:
    """Positions CSVs of the arm set each wrong in one way, by label, beside its frames."""
    folder = Path(good.arm_positions).parent
    rows = list(zip(good.arm_frames, ARM_ANGLES))
    last, angle = rows[-1]
    return {
        "positions CSV without the arm column": _write_positions(folder / "no_column.csv", rows, column="angle"),
        "positions CSV naming a missing frame": _write_positions(folder / "missing.csv",
                                                                 [*rows[:-1], ("absent.tif", angle)]),
        "positions CSV with a non-numeric angle": _write_positions(folder / "text.csv",
                                                                   [*rows[:-1], (last, f"{angle} deg")]),
        "positions CSV listing a frame twice": _write_positions(folder / "twice.csv", [*rows, rows[-1]]),
    }


def _arm_cases(good: GoodFiles, d: Path) -> list[Case]:
    """``integrate --stitch`` and ``calibrate --positions`` cases: bad positions CSVs, a
    frame the CSV does not list, an arm angle beyond the calibrated range (``integrate``
    only: to ``calibrate`` it is a wider calibration), bad goniometer files, guesses,
    calibrants and options."""
    from xrd_bluesky.science.calibration.position_models import (
        read_goniometer_json,
        write_goniometer_json,
    )

    stitch, calibrate = _arm_lines(good, d)
    cases = []
    for label, csv in _bad_positions(good).items():
        cases += [Case(argv[0], label, _set(argv, "--positions", csv)) for argv in (stitch, calibrate)]
    cases += [Case(argv[0], "frame the positions CSV does not list", [argv[0], *good.arm_frames, good.arm_beyond,
                                                                     *argv[1:]]) for argv in (stitch, calibrate)]
    model = read_goniometer_json(good.arm_model)
    other = write_goniometer_json(replace(model, reference=replace(model.reference, detector=DETECTOR)),
                                  d / "arm_other.json")
    far = _poni_variant(good.arm_guess, d / "arm_far.poni", Poni1=_poni_value(good.arm_guess, "Poni1") + 0.05)
    beyond = _write_positions(Path(good.arm_positions).parent / "beyond.csv",
                              [*zip(good.arm_frames, ARM_ANGLES), (good.arm_beyond, ARM_BEYOND_DEG)])
    for label, argv in {
        "arm angle outside the calibrated range": _set(stitch, "--positions", beyond),
        "goniometer file cut short (not JSON)": _set(stitch, "--goniometer", _truncated(good.arm_model,
                                                                                       d / "arm_cut.json")),
        "goniometer JSON of another detector": _set(stitch, "--goniometer", str(other)),
        "PONI as the goniometer": _set(stitch, "--goniometer", good.arm_guess),
        "--stitch without --goniometer": _without(stitch, "--goniometer"),
        "--arm without --positions": _without(calibrate, "--positions"),
        "LaB6 arm frames told they are CeO2": _set(calibrate, "--calibrant", "CeO2"),
        "guess PONI 5 cm off": _set(calibrate, "--guess", far),
    }.items():
        cases.append(Case(argv[0], label, argv))
    return cases


def _pattern_cases(good: GoodFiles, d: Path) -> list[Case]:
    """``fit-peaks`` cases: bad windows and bad pattern files."""
    (d / "empty.xye").write_text("")
    (d / "noise.xye").write_bytes(np.random.default_rng(1).bytes(5000))
    rows = Path(good.pattern).read_text().splitlines()
    (d / "ragged.xye").write_text("\n".join(rows[:100] + ["1.0 2.0 3.0 4.0"] + rows[100:]) + "\n")
    fit = ["fit-peaks", good.pattern, "-o", str(d / "peaks.csv")]
    windows = {"window to infinity": "9.5:inf", "window of NaN": "nan:1", "reversed window": "9:8",
               "window beyond the data": "150:160", "window without a peak": "1.0:1.5"}
    cases = [Case("fit-peaks", label, [*fit, "--peak", w]) for label, w in windows.items()]
    for label, path in {"missing pattern": str(d / "absent.xye"), "empty pattern": str(d / "empty.xye"),
                        "random bytes as pattern": str(d / "noise.xye"),
                        "row of another length": str(d / "ragged.xye")}.items():
        cases.append(Case("fit-peaks", label, ["fit-peaks", path, "--peak", "9:10", "-o", str(d / "peaks.csv")]))
    cases.append(Case("fit-peaks", "CSV into a missing folder",
                      ["fit-peaks", good.pattern, "--peak", "9:10", "-o", str(d / "missing" / "p.csv")]))
    return cases


def _pdf_cases(good: GoodFiles, d: Path) -> list[Case]:
    """``pdf`` cases: bad patterns, backgrounds, compositions, ranges, configuration files."""
    q, intensity = ni_pattern()
    spiked = intensity.copy()
    spiked[np.argmin(np.abs(q - SPIKE_Q_A))] *= 20.0
    two_theta = np.degrees(2 * np.arcsin(q * NI_WAVELENGTH_A / (4 * np.pi)))
    cfg = Path(good.pdf_config).read_text()
    files = {
        "spike": _write_pattern(d / "ni_spike.chi", q, spiked),
        "strong background": _write_pattern(d / "ni_bg_strong.chi", q, 2.0 * intensity),
        "2theta": _write_pattern(d / "ni_2theta.xy", two_theta, intensity, radial="2th_deg (deg)"),
        "text": _write_text(d / "ni_text.chi", "# Ni\nQ intensity\nnot a pattern\n"),
        "neutron": _write_text(d / "neutron.cfg", cfg.replace("mode = xray", "mode = neutron")),
        "misspelt": _write_text(d / "misspelt.cfg", cfg + "qmaxx = 20\n"),
        "no composition": _write_text(d / "nocomp.cfg", cfg.replace("composition = Ni\n", "")),
    }
    out = str(d / "pdf_out")
    pdf = ["pdf", good.pdf_pattern, "--config", good.pdf_config, "-o", out]
    argvs = {
        "pattern with a one-point spike": ["pdf", files["spike"], *pdf[2:]],
        "background stronger than the sample": [*pdf, "--background", files["strong background"]],
        "qmax beyond the data": [*pdf, "--qmaxinst", "40", "--qmax", "40"],
        "element xraylib does not know": [*pdf, "--composition", "NiXx"],
        "malformed composition": [*pdf, "--composition", "Ni)2"],
        "rmax below rmin": [*pdf, "--rmin", "10", "--rmax", "5"],
        "2theta pattern without a wavelength": ["pdf", files["2theta"], *pdf[2:], "--format", "twotheta"],
        "2theta pattern read as Q": ["pdf", files["2theta"], *pdf[2:]],
        "missing pattern": ["pdf", str(d / "absent.chi"), *pdf[2:]],
        "non-numeric pattern": ["pdf", files["text"], *pdf[2:]],
        "missing pdfgetx3.cfg": _set(pdf, "--config", str(d / "absent.cfg")),
        "pdfgetx3.cfg with mode = neutron": _set(pdf, "--config", files["neutron"]),
        "pdfgetx3.cfg with a misspelt key": _set(pdf, "--config", files["misspelt"]),
        "pdfgetx3.cfg without composition": _set(pdf, "--config", files["no composition"]),
        "pdfgetx3.cfg section that does not exist": [*pdf, "--section", "nacl"],
        "output into a missing folder": _set(pdf, "-o", str(d / "missing" / "pdf")),
    }
    return [Case("pdf", label, argv) for label, argv in argvs.items()]


def _other_cases(d: Path) -> list[Case]:
    """``dfxrm``, ``beamline``, ``serve``, ``lineage``, ``replay`` and ``sync`` cases."""
    out = str(d / "dfxrm")
    cases = [Case("dfxrm", label, ["dfxrm", cif, "--energy-keV", "17", "-o", out])
             for label, cif in _bad_cifs(d).items()]
    for label, extra in {"energy 0": ["--energy-keV", "0"], "energy 75 keV": ["--energy-keV", "75"],
                         "negative thickness": ["--thickness-um", "-1"],
                         "2theta range beyond 180 deg": ["--two-theta-range", "10", "200"]}.items():
        cases.append(Case("dfxrm", label, ["dfxrm", "Si", "--energy-keV", "17", "-o", out, *extra]))
    cases.append(Case("dfxrm", "output folder is a file", ["dfxrm", "Si", "--energy-keV", "17",
                                                            "-o", str(d / "a_file")]))
    (d / "not.toml").write_text("[beamline\nname = ")
    (d / "unknown.toml").write_text("[beamline]\nname = 'x'\ncolour = 'red'\n")
    for label, path in {"missing description": str(d / "absent.toml"), "not TOML": str(d / "not.toml"),
                        "unknown key": str(d / "unknown.toml")}.items():
        cases.append(Case("beamline", label, ["beamline", "check", path]))
    for port in ("99999", "0", "http"):
        cases.append(Case("serve", f"port {port}", ["serve", "--port", port, "--directory", str(d / "srv")]))
    nowhere = "http://127.0.0.1:9"
    for label, uid in {"uid with ../": "../../etc", "empty uid": "", "uid with a NUL byte": "ab\x00cd",
                       "absolute path as uid": "/etc/passwd"}.items():
        cases.append(Case("lineage", label, ["lineage", uid, "--catalog", nowhere]))
        cases.append(Case("replay", label, ["replay", uid, "--catalog", nowhere]))
    cases.append(Case("replay", "unreachable catalog", ["replay", "0123456789abcdef", "--catalog", nowhere]))
    cases.append(Case("sync", "catalog URI not http", ["sync", "--catalog", "ftp://example.org/x"]))
    return cases


def _strain_line(good: GoodFiles, d: Path) -> list[str]:
    """The good ``strain`` command line: the CeO2 frame against itself, ring 111."""
    return ["strain", good.frame, "--poni", good.poni, "--reference", good.frame, "--phase", "CeO2",
            "--hkl", "1", "1", "1", "-o", str(d / "strain_out")]


def _imctrl(path: Path, drop: str = "", **values) -> str:
    """A GSAS-II ``.imctrl`` file of a plausible geometry, without the key ``drop`` and
    with the keys of ``values`` set."""
    keys = {"wavelength": "0.729319", "distance": "200.0", "center": "[84.0, 90.0]", "tilt": "0.0",
            "rotation": "0.0", "invert_x": "False", "invert_y": "True", **values}
    return _write_text(path, "".join(f"{k}:{v}\n" for k, v in keys.items() if k != drop))


def _strain_cases(good: GoodFiles, d: Path) -> list[Case]:
    """``strain`` cases: images, references, geometry files, rings, sectors and azimuths
    each wrong in one way."""
    import fabio

    strain = _strain_line(good, d)
    ring = strain.index("--phase")
    no_ring = [*strain[:ring], *strain[ring + 6:]]
    cropped = _write_tif(d / "strain_cropped.tif", fabio.open(good.frame).data[:-10])
    argvs = {
        "image of another shape than the PONI's detector": ["strain", cropped, *strain[2:]],
        "reference that is not an image": _set(strain, "--reference", good.poni),
        "missing reference": _set(strain, "--reference", str(d / "absent_reference.tif")),
        "d-window without a peak": [*no_ring, "--d-windows", "2.2:2.4"],
        "no ring named": no_ring,
        "reflection 0 0 0": [*no_ring, "--phase", "CeO2", "--hkl", "0", "0", "0"],
        "--hkl without --phase": [*no_ring, "--hkl", "1", "1", "1"],
        "unknown phase": _set(strain, "--phase", "Unobtainium"),
        ".imctrl without a distance": [*_set(strain, "--poni", _imctrl(d / "nodist.imctrl", drop="distance")),
                                       "--detector", DETECTOR],
        ".imctrl with a non-numeric distance": [*_set(strain, "--poni", _imctrl(d / "textdist.imctrl",
                                                                                distance="two hundred")),
                                                "--detector", DETECTOR],
        "load azimuth 400 deg": [*strain, "--load-azimuth", "400"],
        "load azimuth NaN": [*strain, "--load-azimuth", "nan"],
        "0 sectors": [*strain, "--sectors", "0"],
        "1 sector": [*strain, "--sectors", "1"],
    }
    return [Case("strain", label, argv) for label, argv in argvs.items()]


#: Monitors of the corpus' absolute-scale runs: I0, It (counts), exposure (s), thickness (mm).
MONITORS = {"i0": 1.2e6, "it": 3.1e5, "exposure_s": 1.0, "thickness_mm": 1.5}


def _absolute_line(good: GoodFiles, d: Path) -> list[str]:
    """The good ``integrate`` command line on the absolute scale: the CeO2 frame with its
    dark and the monitors of :data:`MONITORS` as options."""
    return ["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "--i0", str(MONITORS["i0"]),
            "--it", str(MONITORS["it"]), "--exposure", str(MONITORS["exposure_s"]),
            "--thickness", str(MONITORS["thickness_mm"]), "-o", str(d / "absolute_out")]


def _write_monitors(path: Path, frame: str, drop: str = "", **values) -> str:
    """A monitors CSV of one row: ``frame`` (by its name, beside the CSV) with
    :data:`MONITORS`, without the column ``drop`` and with the cells of ``values`` set."""
    row = {k: v for k, v in {"file": Path(frame).name, **MONITORS, **values}.items() if k != drop}
    return _write_text(path, f"{','.join(row)}\n{','.join(map(str, row.values()))}\n")


def _monitor_cases(good: GoodFiles, d: Path) -> list[Case]:
    """``integrate`` cases of the absolute scale (monitors, background, standard) and of
    the geometry per file (repeated ``--poni``, a positions CSV's ``poni`` column)."""
    import fabio

    absolute = _absolute_line(good, d)
    plain = ["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "-o", str(d / "absolute_out")]
    folder = Path(good.frame).parent
    monitors = {
        "monitors CSV without the thickness column": _write_monitors(folder / "m_nothick.csv", good.frame,
                                                                     drop="thickness_mm"),
        "monitors CSV with a misspelt column": _write_monitors(folder / "m_misspelt.csv", good.frame, drop="i0",
                                                               IO=MONITORS["i0"]),
        "monitors CSV with a non-numeric I0": _write_monitors(folder / "m_text.csv", good.frame, i0="lots"),
        "monitors CSV with a negative thickness": _write_monitors(folder / "m_negative.csv", good.frame,
                                                                  thickness_mm=-1.5),
        "monitors CSV naming a missing frame": _write_monitors(folder / "m_absent.csv", str(d / "absent.tif")),
        "missing monitors CSV": str(d / "absent_monitors.csv"),
    }
    small = _write_tif(d / "background_small.tif", fabio.open(good.frame).data[:-10])
    ponis = _write_text(folder / "poni_missing.csv", f"file,poni\n{Path(good.frame).name},absent.poni\n")
    argvs = {
        "I0 of 0 counts": _set(absolute, "--i0", "0"),
        "It above I0 (transmission > 1)": _set(absolute, "--it", str(2 * MONITORS["i0"])),
        **{label: [*plain, "--monitors", csv] for label, csv in monitors.items()},
        "background of another detector shape": [*absolute, "--background", small],
        "background without monitors": [*plain, "--background", good.frame],
        "unknown standard": [*absolute, "--standard", good.frame, "--standard-name", "mercury"],
        "absolute scale in 2theta": [*absolute, "--unit", "2th_deg"],
        "two --poni for one frame file": [*plain, "--poni", good.poni],
        "positions CSV naming a missing PONI": ["integrate", "--positions", ponis, "-o", str(d / "absolute_out")],
    }
    return [Case("integrate", label, argv) for label, argv in argvs.items()]


#: Root of the corpus pack's Resource: the hash databroker-pack writes in place of the original root.
PACK_ROOT = "5f3c0b8a1d2e4f60718293a4b5c6d7e8"


def _write_pack(directory: Path, files: Path, spec: str = "AD_HDF5") -> str:
    """A databroker-pack directory (jsonl documents) of one run of two frames of an area
    detector, its Resource (``spec``) the HDF5 file ``files/frames.h5``; returns the pack."""
    import json

    import h5py
    import yaml
    from event_model import compose_run

    files.mkdir(parents=True, exist_ok=True)
    with h5py.File(files / "frames.h5", "w") as f:
        f["/entry/data/data"] = np.arange(40, dtype=np.int32).reshape(2, 4, 5)
    run = compose_run(metadata={"plan_name": "count", "scan_id": 1})
    resource = run.compose_resource(spec=spec, root=PACK_ROOT, resource_path="frames.h5",
                                    resource_kwargs={"frame_per_point": 1})
    datums = [resource.compose_datum(datum_kwargs={"point_number": i}) for i in range(2)]
    key = {"source": "corpus", "dtype": "array", "shape": [4, 5], "external": "FILESTORE:"}
    descriptor = run.compose_descriptor(name="primary", data_keys={"det_image": key})
    events = [descriptor.compose_event(data={"det_image": datum["datum_id"]}, timestamps={"det_image": time.time()},
                                       filled={"det_image": False}, seq_num=i + 1) for i, datum in enumerate(datums)]
    documents = [("start", run.start_doc), ("descriptor", descriptor.descriptor_doc),
                 ("resource", resource.resource_doc), *(("datum", datum) for datum in datums),
                 *(("event", event) for event in events), ("stop", run.compose_stop())]
    name = f"documents/{run.start_doc['uid']}.jsonl"
    (directory / "documents").mkdir(parents=True, exist_ok=True)
    _write_text(directory / name, "".join(json.dumps([n, doc]) + "\n" for n, doc in documents))
    _write_text(directory / "documents_manifest.txt", name + "\n")
    source = {"driver": "bluesky-jsonl-catalog", "args": {"root_map": {PACK_ROOT: str(files)}},
              "metadata": {"relative_paths": ["./documents/*.jsonl"]}}
    _write_text(directory / "catalog.yml", yaml.safe_dump({"sources": {"packed_catalog": source}}))
    return str(directory)


def good_pack(d: Path) -> str:
    """The corpus' good pack, its frames under ``d/catalog/frames`` (the embedded
    catalog's readable storage, as ``ingest --directory d/catalog`` needs)."""
    return _write_pack(d / "pack_good", d / "catalog" / "frames" / "pack_files")


def _ingest_cases(d: Path) -> list[Case]:
    """``ingest`` cases: directories that are not packs, a pack naming no run, a pack
    whose run's external file is missing, and bad options. A run ``ingest`` skips is
    found only after the catalog opened (4 s each): of those, one case here;
    ``test_ingest_pack`` has a document file that does not decode and an unknown spec."""
    good = good_pack(d)
    (d / "not_a_pack").mkdir(exist_ok=True)
    not_yaml = Path(_write_pack(d / "pack_not_yaml", d / "pack_not_yaml_files"))
    _write_text(not_yaml / "catalog.yml", "sources: {packed_catalog: [driver: \n")
    driver = Path(_write_pack(d / "pack_driver", d / "pack_driver_files"))
    _write_text(driver / "catalog.yml", (driver / "catalog.yml").read_text().replace("bluesky-jsonl-catalog",
                                                                                      "bluesky-mongo-catalog"))
    no_run = Path(_write_pack(d / "pack_no_run", d / "pack_no_run_files"))
    (no_run / "documents_manifest.txt").unlink()
    for document in (no_run / "documents").iterdir():
        document.rename(document.with_suffix(".msgpack"))
    missing = _write_pack(d / "pack_missing", d / "pack_missing_files")
    (d / "pack_missing_files" / "frames.h5").unlink()
    catalog = ["--directory", str(d / "catalog")]
    argvs = {
        "not a pack directory": [str(d / "not_a_pack")],
        "catalog.yml that is not YAML": [str(not_yaml)],
        "catalog.yml of an unknown driver": [str(driver)],
        "pack whose files match no document glob": [str(no_run)],
        "run whose external file is missing": [missing],
        "--root-map without OLD=": [good, "--root-map", "/data/old"],
        "--spec-alias onto an unknown spec": [good, "--spec-alias", "MY_TIFF=AD_TIFF"],
    }
    return [Case("ingest", label, ["ingest", *argv, *catalog]) for label, argv in argvs.items()]


def run_case(case: Case) -> Outcome:
    """Run ``case`` through the command line in this process and classify the answer."""
    from xrd_bluesky.cli import main

    err, out = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(case.argv)
        except SystemExit as exc:  # argparse: usage errors
            status = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # an exception out of main is a defect: counted, not raised
            status, message = -1, f"{type(exc).__name__}: {exc}"
            return Outcome(case, status, "unexpected", message, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    text = err.getvalue().strip()
    last = (text or out.getvalue().strip() or "\n").splitlines()[-1]  # without stderr, what stdout said last
    if status == 0:
        kind = "warning" if ": warning: " in text else "silent"
    elif ": unexpected " in text or not text:
        kind = "unexpected"
    else:
        kind = "named error"
    return Outcome(case, status, kind, last[:300], seconds)


def table(outcomes: list[Outcome]) -> list[str]:
    """Per command: inputs tried, named errors, warnings, silent results, unexpected."""
    kinds = ("named error", "warning", "silent", "unexpected")
    lines = [f"{'command':12s} {'tried':>6s} {'errors':>7s} {'warnings':>9s} {'silent':>7s} {'unexpected':>11s}"]
    commands = sorted({o.case.command for o in outcomes})
    for command in [*commands, "all"]:
        mine = [o for o in outcomes if command in ("all", o.case.command)]
        counts = [sum(o.kind == k for o in mine) for k in kinds]
        lines.append(f"{command:12s} {len(mine):6d} {counts[0]:7d} {counts[1]:9d} {counts[2]:7d} {counts[3]:11d}")
    return lines


def good_cases(good: GoodFiles, d: Path) -> list[Case]:
    """The good command lines the corpus spoils: each must run clean (exit 0, no warning)."""
    stitch, calibrate = _arm_lines(good, d)
    return [
        Case("integrate", "good frame, dark, gain and mask",
             ["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "--gain", good.gain,
              "--mask", good.mask, "-o", str(d / "good_out")]),
        Case("calibrate", "good calibrant frame", ["calibrate", good.frame, "--calibrant", "CeO2", "--dark", good.dark,
                                                   "--energy-keV", str(ENERGY_KEV), "--guess", good.poni,
                                                   "-o", str(d / "good.poni")]),
        Case("gain-map", "good glass frames", ["gain-map", "--frames", good.gain_frames[0],
                                               "--poni", good.gain_ponis[0], "--frames", good.gain_frames[1],
                                               "--poni", good.gain_ponis[1], "-o", str(d / "good_gain.tif")]),
        Case("fit-peaks", "good pattern", ["fit-peaks", good.pattern, "--peak", _strongest_window(good.pattern),
                                           "-o", str(d / "good_peaks.csv")]),
        Case("pdf", "good Ni pattern and pdfgetx3.cfg", ["pdf", good.pdf_pattern, "--config", good.pdf_config,
                                                         "-o", str(d / "good_pdf")]),
        Case("integrate", "good arm frames, positions CSV and goniometer", stitch),
        Case("calibrate", "good arm frames, positions CSV and guess", calibrate),
        Case("strain", "good frame against itself, CeO2 111", _strain_line(good, d)),
        Case("integrate", "good frame on the absolute scale (monitors as options)", _absolute_line(good, d)),
        Case("integrate", "good frame with its monitors CSV",
             ["integrate", good.frame, "--poni", good.poni, "--dark", good.dark, "--monitors",
              _write_monitors(Path(good.frame).parent / "monitors.csv", good.frame), "-o", str(d / "monitors_out")]),
    ]


def _strongest_window(pattern: str) -> str:
    """A 0.3 deg window around the strongest peak of a 2theta pattern."""
    data = np.loadtxt(pattern, comments="#")
    centre = data[np.argmax(data[:, 1]), 0]
    return f"{centre - 0.15:.4f}:{centre + 0.15:.4f}"


def check_cost(good: GoodFiles, frames: int = 5) -> dict[str, float]:
    """Seconds per frame of a good ``integrate`` run with dark, gain and mask, and of the
    plausibility checks it makes (dark, saturation, shape; mask and gain once), run
    alone on the same arrays."""
    import fabio

    from xrd_bluesky.cli import main
    from xrd_bluesky.science.reduction.input_checks import (
        check_dark,
        check_gain,
        check_mask,
        check_saturation,
    )
    from xrd_bluesky.science.reduction.integration import check_frame_shape
    from xrd_bluesky.sources.file_inputs import read_geometry

    copies = [str(Path(good.frame).with_name(f"copy{i}.tif")) for i in range(frames)]
    for path in copies:
        Path(path).write_bytes(Path(good.frame).read_bytes())
    argv = ["integrate", *copies, "--poni", good.poni, "--dark", good.dark, "--gain", good.gain,
            "--mask", good.mask, "-o", str(Path(good.frame).parent / "cost")]
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)  # warm-up: the integrator's caches
        start = time.perf_counter()
        main(argv)
        run_s = (time.perf_counter() - start) / frames
    poni = read_geometry(good.poni)
    frame, dark = fabio.open(good.frame).data, fabio.open(good.dark).data.astype(np.float32)
    mask = fabio.open(good.mask).data != 0
    gain = fabio.open(good.gain).data
    start = time.perf_counter()
    check_mask(mask, "mask")
    check_gain(gain, ~np.isfinite(gain), "gain")
    once_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(frames):
        check_frame_shape(frame, poni)
        check_dark(dark, frame, mask, 2**31 - 1, "dark", "frame")
        check_saturation(frame, 2**31 - 1, "frame")
    per_frame_s = (time.perf_counter() - start) / frames
    return {"integrate_s_per_frame": run_s, "checks_s_per_frame": per_frame_s + once_s / frames,
            "check_cost_fraction": (per_frame_s + once_s / frames) / run_s}


def run(directory: Path, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Build the corpus in ``directory``, run every case and the good command lines,
    and measure the checks' cost; return the outcomes and the numbers."""
    directory.mkdir(parents=True, exist_ok=True)
    good = good_files(directory)
    outcomes = []
    for case in corpus(good, directory):
        outcomes.append(run_case(case))
        o = outcomes[-1]
        progress(f"{o.kind:12s} {o.seconds:6.2f} s  {case.command} / {case.label}: {o.message}")
    clean = [run_case(case) for case in good_cases(good, directory)]
    for o in clean:
        progress(f"good input  {o.kind:12s} {o.seconds:6.2f} s  {o.case.command} / {o.case.label}: {o.message}")
    input_errors = [o.seconds for o in outcomes if o.kind == "named error" and o.status == 2]
    return {"outcomes": outcomes, "good": clean, **check_cost(good),
            "max_seconds_to_input_error": max(input_errors, default=math.nan),
            "median_seconds_to_input_error": float(np.median(input_errors)) if input_errors else math.nan}


def summary(result: dict) -> dict[str, float]:
    """The ``name: value`` numbers of a :func:`run`."""
    outcomes = result["outcomes"]
    return {
        "inputs_tried": len(outcomes),
        "named_errors": sum(o.kind == "named error" for o in outcomes),
        "warnings": sum(o.kind == "warning" for o in outcomes),
        "silent_results": sum(o.kind == "silent" for o in outcomes),
        "unexpected_errors": sum(o.kind == "unexpected" for o in outcomes),
        "good_inputs_not_clean": sum(o.kind != "silent" or o.status != 0 for o in result["good"]),
        "max_seconds_to_input_error": result["max_seconds_to_input_error"],
        "median_seconds_to_input_error": result["median_seconds_to_input_error"],
        "integrate_s_per_frame": result["integrate_s_per_frame"],
        "checks_s_per_frame": result["checks_s_per_frame"],
        "check_cost_fraction": result["check_cost_fraction"],
    }
