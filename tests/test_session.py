"""The interactive session: what `xrd-bluesky session` hands to IPython."""

import subprocess
import sys

from xrd_bluesky.cli.session import build_session
from xrd_bluesky.sim_devices import BeamlineConfig


def test_session_namespace_is_ready(tmp_path):
    session = build_session(directory=tmp_path, config=BeamlineConfig(detector="Pilatus1M"))
    try:
        ns = session.namespace()
        for name in ("RE", "catalog", "raw", "processed", "det", "det_stage", "source", "i0", "it",
                     "sample_changer", "gonio", "plans", "bp", "bps", "session"):
            assert name in ns, name
        geometry = session.current_geometry()  # before any calibration: the description's nominal geometry
        assert geometry.label == "nominal"
        assert geometry.model == session.beamline.config.nominal_geometry()
        assert session.current_gain_map() is None
    finally:
        session.close()


def test_session_command_starts_ipython(tmp_path):
    """The console command starts IPython with the names defined (stdin piped)."""
    code = "print('READY', type(RE).__name__, det.name, len(raw) >= 0)\nexit\n"
    out = subprocess.run([sys.executable, "-m", "xrd_bluesky.cli.main", "session", "--directory", str(tmp_path)],
                         input=code, capture_output=True, text=True, timeout=120)
    assert "READY RunEngine det True" in out.stdout, out.stderr[-2000:]


def test_session_with_a_beamline_description_builds_no_simulator(tmp_path):
    """`xrd-bluesky session --beamline FILE`: IPython attached to the description, no
    simulated devices, the nominal geometry current before any calibration."""
    from xrd_bluesky.beamline import EXAMPLE

    description = tmp_path / "beamline.toml"
    description.write_text(EXAMPLE.replace('storage_roots = ["/tmp"]', f'storage_roots = ["{tmp_path}"]'))
    code = ("print('READY', beamline.name, simulator, 'det' in dir(), session.current_geometry().label, "
            "session.router is not None)\nexit\n")
    out = subprocess.run([sys.executable, "-m", "xrd_bluesky.cli.main", "session",
                          "--directory", str(tmp_path / "data"), "--beamline", str(description)],
                         input=code, capture_output=True, text=True, timeout=120)
    assert "READY my-beamline None False nominal True" in out.stdout, out.stderr[-2000:]
