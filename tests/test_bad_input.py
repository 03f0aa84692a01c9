"""Bad input gets a domain error that names the culprit."""

import math

import h5py
import numpy as np
import pytest

from xrd_bluesky.callbacks.frames import FrameRef
from xrd_bluesky.errors import CorruptFrameError, GeometryError, MonitorError, ShapeMismatchError
from xrd_bluesky.science.geometry import Poni
from xrd_bluesky.science.integration import integrate_1d
from xrd_bluesky.science.monitors import transmission
from xrd_bluesky.store import open_catalog


@pytest.mark.parametrize("change, culprit", [
    ({"dist": 0.0}, "dist"), ({"dist": -0.1}, "dist"), ({"dist": math.nan}, "dist"),
    ({"wavelength": 1e-12}, "wavelength"), ({"wavelength": 6e-10}, "wavelength"),
    ({"rot1": math.inf}, "rot1"), ({"detector": "NoSuchDetector"}, "NoSuchDetector"),
])
def test_nonsense_geometry_is_refused(change, culprit):
    params = dict(dist=0.3, poni1=0.1, poni2=0.1, wavelength=7e-11, detector="Pilatus1M")
    with pytest.raises(GeometryError, match=culprit):
        Poni(**{**params, **change})


def test_missing_poni_file_is_named(tmp_path):
    with pytest.raises(GeometryError, match="nothere.poni"):
        Poni.read(tmp_path / "nothere.poni")


def test_truncated_hdf5_frame_file_is_named(tmp_path):
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros((2, 4, 4), np.int32))
    path.write_bytes(path.read_bytes()[:200])  # truncate
    with pytest.raises(CorruptFrameError, match="frames.h5"):
        FrameRef(path, "/entry/data/data", 0).read(1)


def test_missing_frames_are_named(tmp_path):
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros((1, 4, 4), np.int32))
    with pytest.raises(CorruptFrameError, match="short.h5.*holds 1 frames"):
        FrameRef(path, "/entry/data/data", 3).read(1)


def test_wrong_shape_frame_is_a_shape_error_even_under_python_O():
    poni = Poni(0.3, 0.1, 0.1, wavelength=7e-11, detector="Pilatus1M")
    with pytest.raises(ShapeMismatchError, match=r"\(100, 100\).*Pilatus1M"):
        integrate_1d(np.ones((100, 100)), poni)


@pytest.mark.parametrize("i0, it", [(0.0, 10.0), (float("nan"), 1.0), (100.0, -1.0), (100.0, 200.0)])
def test_non_physical_transmission_is_named(i0, it):
    with pytest.raises(MonitorError, match="I0|It|transmission"):
        transmission(i0, it)


def test_remote_catalog_uses_the_api_key_from_the_environment(catalog, monkeypatch):
    """open_catalog(uri) on a served Tiled: the key comes from TILED_API_KEY only;
    without it the server refuses."""
    base = catalog.uri.split("?")[0]
    key = catalog.uri.split("api_key=")[1]
    monkeypatch.setenv("TILED_API_KEY", key)
    remote = open_catalog(base)
    assert set(remote.client) >= {"raw", "processed"}
    monkeypatch.setenv("TILED_API_KEY", "wrong-key")
    with pytest.raises(Exception, match="401|Unauthorized|authenticat|API key"):
        open_catalog(base)
