"""``xrd-bluesky dfxrm``: table, proposed reflection and angles printed; plots and the
logbook PDF written; bad requests end with a domain error, not a traceback."""

from __future__ import annotations

import shutil

import pytest

from xrd_bluesky.cli import main
from xrd_bluesky.science.dfxrm.cif_structure import read_cif


def test_dfxrm_on_a_bundled_cif(tmp_path, capsys):
    assert main(["dfxrm", "Si", "--energy-keV", "17", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "proposed (brightest reachable) reflection: (2 2 0)" in out
    assert "   1   1   1     8" in out and "   2   2   0    12" in out  # table rows with multiplicities
    assert "omega = " in out and "chi = " in out and "phi = " in out
    for name in ("Si_attenuation_length.png", "Si_transmission.png", "Si_geometry_3d.png", "Si_dfxrm.pdf"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    assert (tmp_path / "out" / "Si_dfxrm.pdf").read_bytes().startswith(b"%PDF")


def test_dfxrm_on_a_cif_path_with_options(tmp_path, capsys):
    cif = tmp_path / "my_sapphire.cif"
    shutil.copy(read_cif("Al2O3").source, cif)
    code = main(["dfxrm", str(cif), "--energy-keV", "20", "--hkl", "1", "0", "4", "--thickness-um", "50",
                 "--up", "0", "0", "1", "--exit-uvw", "1", "0", "0", "--two-theta-range", "5", "30",
                 "--scattering-plane", "horizontal", "-o", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "chosen reflection: (1 0 4)" in out and "horizontal scattering plane" in out
    assert "slab 50 um" in out
    assert (tmp_path / "Al2O3_dfxrm.pdf").stat().st_size > 1000


def test_dfxrm_refuses_bad_requests(tmp_path, capsys):
    assert main(["dfxrm", "Si", "--energy-keV", "17", "--hkl", "2", "0", "0", "-o", str(tmp_path)]) == 2
    assert "systematically absent" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: a usage error
        main(["dfxrm", "Si", "--energy-keV", "75", "-o", str(tmp_path)])
    assert exited.value.code == 2
    assert "75 keV is outside 1-60 keV" in capsys.readouterr().err
    assert main(["dfxrm", "Unobtainium", "--energy-keV", "17", "-o", str(tmp_path)]) == 2
    assert "bundled" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
