"""Security: a served catalog requires the API key from the environment; no pickle and
no unsafe YAML anywhere; file names from metadata cannot leave their directory."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from xrd_bluesky.errors import UnsafePathError
from xrd_bluesky.paths import safe_child
from xrd_bluesky.store import open_catalog
from xrd_bluesky.store.spool import spool_file
from xrd_bluesky.store.writer import SpoolingWriter
from xrd_bluesky_bench.testing import ServerProcess

PACKAGE = Path(__file__).resolve().parents[1] / "xrd_bluesky"
#: Names that would put a file elsewhere (or nowhere), whatever suffix is added.
ESCAPING_NAMES = ["../escape", "../../etc/passwd", "/etc/passwd", "a/../../b", "x\x00y", "a\\..\\b"]


def test_served_catalog_refuses_requests_without_the_api_key(tmp_path, monkeypatch):
    key = secrets.token_hex(16)
    with ServerProcess(tmp_path, key) as server:
        assert httpx.get(f"{server.uri}/metadata/").status_code == 401
        assert httpx.get(f"{server.uri}/metadata/", headers={"Authorization": "Apikey wrong"}).status_code == 401
        assert httpx.get(f"{server.uri}/metadata/", headers={"Authorization": f"Apikey {key}"}).status_code == 200
        monkeypatch.setenv("TILED_API_KEY", key)
        catalog = open_catalog(server.uri, directory=tmp_path)
        assert set(catalog.client) >= {"raw", "processed"}
        monkeypatch.delenv("TILED_API_KEY")
        with pytest.raises(Exception, match="401|Unauthorized|authenticat|API key"):
            open_catalog(server.uri, directory=tmp_path)


def test_serve_does_not_start_without_an_api_key(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "TILED_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "xrd_bluesky.cli.main", "serve", "--directory", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "TILED_API_KEY" in done.stderr


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_names_from_metadata_cannot_leave_the_directory(tmp_path, name):
    with pytest.raises(UnsafePathError, match="refusing file name"):
        safe_child(tmp_path, name)
    with pytest.raises(UnsafePathError, match="refusing file name"):
        spool_file(tmp_path, name)


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_names_that_are_the_directory_or_its_parent_are_refused(tmp_path, name):
    with pytest.raises(UnsafePathError, match="refusing file name"):
        safe_child(tmp_path, name)


def test_a_symlink_out_of_the_directory_is_refused(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="resolves outside"):
        safe_child(tmp_path / "inside", "link")
    assert safe_child(tmp_path / "inside", "run-1234.jsonl") == tmp_path / "inside" / "run-1234.jsonl"


def test_a_run_uid_that_is_a_path_is_not_spooled_outside(tmp_path):
    writer = SpoolingWriter(None, tmp_path / "spool")
    with pytest.raises(UnsafePathError, match="refusing file name"):
        writer("start", {"uid": "../../outside", "time": 0.0})
    writer.close()
    assert not (tmp_path / "outside.jsonl").exists() and not list(tmp_path.rglob("*.jsonl"))


def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_pickle_anywhere():
    pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|cloudpickle|dill)\b|allow_pickle\s*=\s*True", re.M)
    offenders = [str(p) for p, text in _sources() if pattern.search(text)]
    assert not offenders, f"pickle used in {offenders}"


def test_yaml_only_through_safe_loading():
    pattern = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\s*\(|Loader\s*=\s*yaml\.(Loader|UnsafeLoader)")
    offenders = [str(p) for p, text in _sources() if pattern.search(text)]
    assert not offenders, f"unsafe YAML loading in {offenders}"
