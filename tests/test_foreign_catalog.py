"""Runs recorded by other software in a stock Tiled server (``tiled serve catalog``, no
exporter of ours, bluesky-tiled-plugins' ``TiledWriter`` behind a plain RunEngine):
replayed through the live analyses with what they lack given by options, read through
the client only, the source never written to; the CeO2 rings land where the simulator's
true geometry puts them."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time

import numpy as np
import pyFAI.calibrant
import pytest
from bluesky import RunEngine
from bluesky.plans import count, scan
from bluesky_tiled_plugins import TiledWriter
from tiled.client import from_uri
from tiled.queries import Key

from xrd_bluesky.cli import main
from xrd_bluesky.errors import AmbiguousInputError, MissingMetadataError
from xrd_bluesky.science.reduction.peak_fitting import fit_peak
from xrd_bluesky.science.units import two_theta_rad
from xrd_bluesky.sim_devices import BeamlineConfig, make_beamline
from xrd_bluesky.sources.catalog_run import run_documents
from xrd_bluesky.store.replay import RAW_SOURCE_KEY, RunCompletion

DETECTOR = "Pilatus300kw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stock_server(tmp_path_factory):
    """A stock Tiled server in its own process (as a facility runs one), its URI and key."""
    frames = tmp_path_factory.mktemp("foreign_frames")
    key, port = secrets.token_hex(8), _free_port()
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "tiled"), "serve", "catalog", "--temp",
                               "--api-key", key, "--port", str(port), "-r", str(frames)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            client = from_uri(uri, api_key=key)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.3)
    yield uri, key, client, frames
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def foreign(stock_server):
    """Runs written by plain bluesky into the stock server: two CeO2 counts in a ``raw``
    container (no purpose, no image key: nothing of ours), one at the root, a motor scan
    without frames; and the simulator's true geometry as a PONI file."""
    uri, key, client, frames = stock_server
    bl = make_beamline(BeamlineConfig(detector=DETECTOR, seed=11), data_dir=frames)
    bl.sample_changer.slot.put("CeO2")
    RE = RunEngine({}, call_returns_result=False)
    raw = client.create_container("raw")
    token = RE.subscribe(TiledWriter(raw))
    in_raw = RE(count([bl.detector, bl.i0, bl.it], num=2), sample={"name": "CeO2"}, operator="someone else")
    (no_frames,) = RE(scan([bl.i0], bl.sample_changer.strain, 0, 1, 3))
    RE.unsubscribe(token)
    RE.subscribe(TiledWriter(client))
    (at_root,) = RE(count([bl.detector, bl.i0, bl.it], num=1))
    poni = bl.true_poni().write(frames.parent / "true.poni")
    return {"uri": uri, "key": key, "client": client, "in_raw": in_raw, "at_root": at_root,
            "no_frames": no_frames, "poni": poni, "wavelength_m": bl.true_poni().wavelength}


def snapshot(client) -> dict:
    """Every node of the server and its metadata, to show a replay changed nothing."""
    out = {}
    for key, node in client.items():
        out[key] = dict(node.metadata)
        if key == "raw":
            out.update({f"raw/{k}": (dict(v.metadata), sorted(v)) for k, v in node.items()})
    return out


def replay_cli(foreign, *argv, tmp_path, monkeypatch) -> int:
    monkeypatch.setenv("TILED_API_KEY", foreign["key"])
    return main(["replay", *argv, "--catalog", foreign["uri"], "--directory", str(tmp_path / "ours")])


def ceo2_rings(wavelength_m: float, n: int = 4) -> np.ndarray:
    """2theta (deg) of CeO2's first ``n`` rings."""
    d = np.array(pyFAI.calibrant.get_calibrant("CeO2").get_dSpacing()[:n])
    return np.degrees(two_theta_rad(d, wavelength_m))


def test_a_foreign_run_is_replayed_with_a_poni_and_its_rings_are_where_the_truth_puts_them(
        foreign, catalog, tmp_path, monkeypatch, capsys):
    """A run in a stock server's ``raw`` container (the case that gave a 406 before),
    completed with --purpose and --poni: an integration run in our catalog whose CeO2
    rings fit within 0.005 deg of the true geometry's (the simulator renders rings at
    the truth; 0.005 deg is a tenth of a pixel at this distance), recording where the
    raw run is; files exported; the stock server unchanged."""
    before = snapshot(foreign["client"])
    uid = foreign["in_raw"][0]
    monkeypatch.setenv("TILED_API_KEY", foreign["key"])
    status = main(["replay", uid, "--catalog", foreign["uri"], "--container", "raw", "--into", catalog.uri,
                   "--purpose", "measurement", "--poni", str(foreign["poni"]), "--export", str(tmp_path / "files")])
    out = capsys.readouterr()
    assert status == 0, out
    derived = [r for r in catalog.processed.search(Key(RAW_SOURCE_KEY) == f"{foreign['uri']} container raw").values()
               if uid in r.start["parent_uids"]]
    assert len(derived) == 1 and derived[0].stop["exit_status"] == "success"
    run = derived[0]
    assert run.start["geometry"]["source"] == "poni_file" and run.start["replay"] is True
    primary = run["primary"].read()
    assert len(primary["two_theta"]) == 2
    x, y, sigma = (np.asarray(primary[k][0], dtype=float) for k in ("two_theta", "intensity_2theta", "sigma_2theta"))
    visible = [t for t in ceo2_rings(foreign["wavelength_m"])
               if x[np.isfinite(y)].min() + 0.2 < t < x[np.isfinite(y)].max() - 0.2]
    assert len(visible) >= 2, visible
    for ring in visible:
        fit = fit_peak(x, y, (ring - 0.15, ring + 0.15), sigma=sigma)
        assert fit.success and abs(fit.centre - ring) < 0.005, (ring, fit)
    exported = sorted(p.name for p in (tmp_path / "files").rglob("*.xye"))
    assert exported and any("2th" in name for name in exported), exported
    assert snapshot(foreign["client"]) == before


def test_frames_through_the_client_equal_the_files(foreign):
    """Read through the server (as from a remote catalog) or from the files in place, a
    foreign run's frames are the same numbers; the descriptor then no longer calls them
    external."""
    run = foreign["client"]["raw"][foreign["in_raw"][0]]
    in_place = list(run_documents(run, "stock", "files"))
    through = list(run_documents(run, "stock", "client"))
    assert [n for n, _ in in_place].count("stream_resource") == 1
    assert "stream_resource" not in [n for n, _ in through]
    events = [d for n, d in through if n == "event"]
    descriptor = next(d for n, d in through if n == "descriptor")
    image_key = next(k for k, v in descriptor["data_keys"].items() if v.get("units") == "counts" and v["shape"])
    assert "external" not in descriptor["data_keys"][image_key]
    from xrd_bluesky.frames.hdf5 import open_hdf5, path_from_uri

    resource = next(d for n, d in in_place if n == "stream_resource")
    with open_hdf5(path_from_uri(resource["uri"])) as f:
        stored = np.asarray(f[resource["parameters"]["dataset"]])
    per_event = stored.reshape(len(events), *descriptor["data_keys"][image_key]["shape"])
    for i, event in enumerate(events):
        np.testing.assert_array_equal(np.asarray(event["data"][image_key]), per_event[i])


def test_what_a_foreign_run_lacks_is_named(foreign, tmp_path, monkeypatch, capsys):
    """No purpose, no geometry, a purpose the run contradicts, a node that is not a run,
    a container that is not there: named errors (exit status 2), nothing written."""
    uid = foreign["at_root"]
    for options, message in (((), "purpose None: nothing to replay.*--purpose"),
                             (("--purpose", "measurement"), "--poni FILE, --calibration UID, or a --beamline"),
                             (("--container", "elsewhere"), "has no container 'elsewhere'"),
                             (("--container", "raw"), f"raw run {uid} is not in .* container raw")):
        assert replay_cli(foreign, uid, *options, tmp_path=tmp_path, monkeypatch=monkeypatch) == 2
        assert re.search(message, capsys.readouterr().err), message
    start = foreign["client"][uid].metadata["start"]
    with pytest.raises(AmbiguousInputError, match="says purpose = 'measurement', the replay was told 'calibration'"):
        RunCompletion({"purpose": "calibration"}).completed({**start, "purpose": "measurement"})
    with pytest.raises(MissingMetadataError, match="not a Bluesky run"):
        run_documents(foreign["client"]["raw"], "stock")


def test_search_on_a_foreign_catalog_replays_each_run_and_says_which_failed(foreign, catalog, monkeypatch, capsys):
    """--search over the stock server (``start.`` keys: a plain container searches whole
    metadata): the motor scan without frames makes an integration run that fails naming
    the missing image key (exit status 1); the CeO2 count at the root succeeds."""
    monkeypatch.setenv("TILED_API_KEY", foreign["key"])
    status = main(["replay", "--search", "plan_name=scan", "--catalog", foreign["uri"], "--container", "raw",
                   "--into", catalog.uri, "--purpose", "measurement", "--poni", str(foreign["poni"])])
    out, err = capsys.readouterr()
    assert status == 1, (out, err)
    assert f"raw run {foreign['no_frames']}" in out and "fail: MissingMetadataError" in out, out
    assert "has no image data keys" in out and "replayed 1 of 1 raw runs" in out, out
    status = main(["replay", "--search", "plan_name=count", "--catalog", foreign["uri"], "--into", catalog.uri,
                   "--purpose", "measurement", "--poni", str(foreign["poni"])])
    out = capsys.readouterr().out
    assert status == 0 and "replayed 1 of 1 raw runs" in out, out
