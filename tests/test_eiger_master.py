"""Dectris Eiger master files: ``/entry/data/data_000001``, ``data_000002``... are
external links to data files of frames, which the one frame reader reads in the
links' order with the master's detector header; a missing, empty, gapped or
mismatched series is a named error, as is ``/entry/data/data`` as a virtual dataset
of a missing source."""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrd_bluesky.cli.integrate import add_parser
from xrd_bluesky.errors import CorruptFrameError, ResourceLimitError, ShapeMismatchError
from xrd_bluesky.frames import reader
from xrd_bluesky.frames.reader import read_frames, read_image
from xrd_bluesky.science.geometry import Poni

#: Detector header of the test masters (Eiger units: m, s, angstrom).
HEADER = {"count_time": (0.5, "s"), "x_pixel_size": (75e-6, "m"), "y_pixel_size": (75e-6, "m"),
          "detector_distance": (0.12, "m"), "detectorSpecific/saturation_value": (100000, None)}
WAVELENGTH_A = 0.7293


def write_data_file(path: Path, frames: np.ndarray) -> None:
    """A Dectris data file: the frames at ``/entry/data/data``, one chunk per frame."""
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=frames, chunks=(1, *frames.shape[1:]))


def write_master(path: Path, data_files: list[str], header: bool = True) -> Path:
    """A master linking ``data_000001``... to ``data_files`` (relative names), with the
    detector header of :data:`HEADER` and the wavelength."""
    with h5py.File(path, "w") as f:
        f.require_group("/entry/data")
        for i, name in enumerate(data_files, start=1):
            f[f"/entry/data/data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        if header:
            for key, (value, units) in HEADER.items():
                f[f"/entry/instrument/detector/{key}"] = value
                if units:
                    f[f"/entry/instrument/detector/{key}"].attrs["units"] = units
            f["/entry/instrument/beam/incident_wavelength"] = WAVELENGTH_A
            f["/entry/instrument/beam/incident_wavelength"].attrs["units"] = "angstrom"
    return path


def eiger_series(folder: Path, counts: tuple[int, ...] = (3, 2), shape: tuple[int, int] = (6, 7)) -> tuple[
        Path, np.ndarray]:
    """A master ``x_master.h5`` and its data files of ``counts`` frames each; the frame
    ``k`` of the series is ``k + 1`` everywhere. Returns the master and all frames."""
    frames = np.stack([np.full(shape, k + 1, np.uint32) for k in range(sum(counts))])
    names, start = [], 0
    for i, count in enumerate(counts, start=1):
        names.append(f"x_data_{i:06d}.h5")
        write_data_file(folder / names[-1], frames[start:start + count])
        start += count
    return write_master(folder / "x_master.h5", names), frames


def test_frames_of_all_data_files_in_order_with_the_masters_header(tmp_path, monkeypatch):
    """Read from another working directory (HDF5 finds data files beside the master):
    five frames in the series' order, named by the master, with its exposure, cut-off
    (the saturation value) and detector header."""
    master, frames = eiger_series(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = read_image(master)
    assert [name for name, _ in image.frames] == [f"x_master_{k:05d}" for k in range(5)]
    for (_, frame), expected in zip(image.frames, frames):
        np.testing.assert_array_equal(frame, expected)
    assert image.exposure_s == 0.5 and image.count_cutoff == 100000
    assert image.header["x_pixel_size"] == image.header["y_pixel_size"] == 75e-6
    assert image.header["x_pixel_size_units"] == "m" and image.header["detector_distance"] == 0.12
    assert (image.header["wavelength"], image.header["wavelength_units"]) == (WAVELENGTH_A, "angstrom")


def test_links_are_read_by_number_not_by_creation_order(tmp_path):
    """Links created 2 then 1 still give data file 1's frames first."""
    write_data_file(tmp_path / "a.h5", np.full((1, 4, 4), 1, np.uint16))
    write_data_file(tmp_path / "b.h5", np.full((2, 4, 4), 2, np.uint16))
    with h5py.File(tmp_path / "y_master.h5", "w", track_order=True) as f:
        group = f.create_group("/entry/data", track_order=True)
        group["data_000002"] = h5py.ExternalLink("b.h5", "/entry/data/data")
        group["data_000001"] = h5py.ExternalLink("a.h5", "/entry/data/data")
    assert [int(frame[0, 0]) for _, frame in read_frames(tmp_path / "y_master.h5")] == [1, 2, 2]


def test_missing_data_file_names_the_master_the_link_and_the_file(tmp_path):
    master, _ = eiger_series(tmp_path)
    (tmp_path / "x_data_000002.h5").unlink()
    with pytest.raises(CorruptFrameError, match=r"x_master\.h5: link /entry/data/data_000002 names the data file "
                                                r".*x_data_000002\.h5, which is missing"):
        read_image(master)


def test_unreadable_data_file_is_named(tmp_path):
    master, _ = eiger_series(tmp_path)
    (tmp_path / "x_data_000001.h5").write_bytes(b"not HDF5")
    with pytest.raises(CorruptFrameError, match=r"x_master\.h5: link /entry/data/data_000001 names /entry/data/data "
                                                r"in .*x_data_000001\.h5, which cannot be opened"):
        read_image(master, "dark")


def test_master_without_data_links_is_named(tmp_path):
    master = write_master(tmp_path / "z_master.h5", [])
    with pytest.raises(CorruptFrameError, match=r"z_master\.h5 is an Eiger master without data links"):
        read_image(master)


def test_gap_in_the_series_is_named(tmp_path):
    master, _ = eiger_series(tmp_path, counts=(1, 1, 1))
    with h5py.File(master, "a") as f:
        del f["/entry/data/data_000002"]
    with pytest.raises(CorruptFrameError, match=r"links data_000001, data_000003 but not data_000002"):
        read_image(master)


def test_data_files_of_different_frame_shapes_are_named(tmp_path):
    write_data_file(tmp_path / "x_data_000001.h5", np.ones((2, 6, 7), np.uint32))
    write_data_file(tmp_path / "x_data_000002.h5", np.ones((2, 6, 8), np.uint32))
    master = write_master(tmp_path / "x_master.h5", ["x_data_000001.h5", "x_data_000002.h5"])
    with pytest.raises(ShapeMismatchError, match=r"data_000001 \(-> .*x_data_000001\.h5:/entry/data/data\) have shape "
                                                 r"\(6, 7\), frames of .*data_000002 \(-> .*x_data_000002\.h5"):
        read_image(master)


def test_data_file_with_frames_never_written_is_named(tmp_path):
    """A data file closed before the detector wrote its last frame: HDF5 would read zeros."""
    with h5py.File(tmp_path / "x_data_000001.h5", "w") as f:
        dataset = f.create_dataset("/entry/data/data", shape=(3, 6, 7), dtype=np.uint32, chunks=(1, 6, 7))
        dataset[:2] = 1
    master = write_master(tmp_path / "x_master.h5", ["x_data_000001.h5"])
    with pytest.raises(CorruptFrameError, match=r"x_data_000001\.h5:/entry/data/data\): frames \[2\] were never"):
        read_image(master)


def test_data_as_a_virtual_dataset_and_its_missing_source(tmp_path):
    """``/entry/data/data`` as a virtual dataset over the data files reads like the
    links; a missing source file (HDF5 would read the fill value) is named."""
    _, frames = eiger_series(tmp_path)
    layout = h5py.VirtualLayout(frames.shape, frames.dtype)
    layout[:3] = h5py.VirtualSource("x_data_000001.h5", "/entry/data/data", (3, 6, 7))
    layout[3:] = h5py.VirtualSource("x_data_000002.h5", "/entry/data/data", (2, 6, 7))
    with h5py.File(tmp_path / "v_master.h5", "w") as f:
        f.create_virtual_dataset("/entry/data/data", layout)
    np.testing.assert_array_equal(np.stack([frame for _, frame in read_frames(tmp_path / "v_master.h5")]), frames)
    (tmp_path / "x_data_000002.h5").unlink()
    with pytest.raises(CorruptFrameError, match=r"virtual dataset /entry/data/data maps the source file "
                                                r".*x_data_000002\.h5, which is missing"):
        read_image(tmp_path / "v_master.h5")


def test_series_beyond_the_memory_is_refused_before_reading(tmp_path, monkeypatch):
    master, _ = eiger_series(tmp_path)
    monkeypatch.setattr(reader, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ResourceLimitError, match=r"x_master\.h5: 5 frames of \(6, 7\)"):
        read_image(master)


def integrate(*argv) -> int:
    """Run ``xrd-bluesky integrate ARGV`` through a parser built by :func:`add_parser`."""
    parser = argparse.ArgumentParser(prog="xrd-bluesky")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["integrate", *map(str, argv)])
    return args.func(args)


def test_integrate_writes_one_pattern_per_frame_of_the_series(tmp_path):
    """An Eiger 500k series of 2 + 1 uniform frames of 10, 20 and 30 counts: three
    patterns, in order, of intensities 1 : 2 : 3."""
    poni = Poni(0.12, 0.02, 0.04, wavelength=WAVELENGTH_A * 1e-10, detector="Eiger500k").write(tmp_path / "e.poni")
    shape = Poni.read(poni).detector_model().shape
    frames = np.stack([np.full(shape, 10 * (k + 1), np.uint32) for k in range(3)])
    write_data_file(tmp_path / "s_data_000001.h5", frames[:2])
    write_data_file(tmp_path / "s_data_000002.h5", frames[2:])
    master = write_master(tmp_path / "s_master.h5", ["s_data_000001.h5", "s_data_000002.h5"])
    assert integrate(master, "--poni", poni, "--npt", 300, "-o", tmp_path / "out") == 0
    names = [f"s_master_{k:05d}.xye" for k in range(3)]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.xye")) == names
    patterns = [np.loadtxt(tmp_path / "out" / name) for name in names]
    for k, pattern in enumerate(patterns[1:], start=2):
        np.testing.assert_allclose(pattern[:, 1], k * patterns[0][:, 1], rtol=1e-5)
