"""The DF-XRM planner page, run by Streamlit's own test harness (AppTest): it renders,
keeps energy and wavelength in sync, proposes the library's brightest reachable
reflection, shows the library's angles and CRL focal length, names a bad upload, draws
the 3D scene orthographically with all its parts, offers the logbook PDF and a Bluesky
command that drives a goniometer to the angles shown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from unittest import mock

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from xrd_bluesky.cli import main
from xrd_bluesky.cli.planner import APP_PATH
from xrd_bluesky.science.dfxrm.cif_structure import read_cif
from xrd_bluesky.science.dfxrm.compound_refractive_lens import (
    LENS_MATERIALS,
    focal_length_m,
)
from xrd_bluesky.science.dfxrm.orientation import Facet, Mounting, orient
from xrd_bluesky.science.dfxrm.reflection_table import Instrument, reflection_table
from xrd_bluesky.science.units import HC_KEV_ANGSTROM

APP = str(APP_PATH)


@pytest.fixture
def page() -> AppTest:
    """The page as it opens (Si, 17 keV), to interact with."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def opened() -> tuple[AppTest, mock.MagicMock]:
    """The page as it opens, only looked at, and the call of its download button."""
    at = AppTest.from_file(APP, default_timeout=60)
    with mock.patch("streamlit.download_button", wraps=streamlit.download_button) as button:
        at.run()
    assert not at.exception, at.exception
    return at, button


def shown_angles(at: AppTest) -> dict[str, float]:
    """omega, chi, phi (deg) as the page shows them."""
    return {m.label.split()[0]: float(m.value) for m in at.metric if m.label.split()[0] in ("omega", "chi", "phi")}


def test_default_page_renders(opened):
    page, _ = opened
    assert not page.error
    table = reflection_table(read_cif("Si"), 17.0)
    frame = page.dataframe[0].value
    assert list(frame["hkl"]) == [f"({h} {k} {ell})" for h, k, ell in (r.hkl for r in table.reflections)]
    assert list(frame.columns) == ["hkl", "multiplicity", "d (A)", "2theta (deg)", "|F|^2 (e^2)",
                                   "I_rel (max 100)"]
    assert set(shown_angles(page)) == {"omega", "chi", "phi"}
    assert page.get("plotly_chart") and len(page.get("image")) == 2  # 3D view; attenuation and transmission
    assert "RE(dfxrm_align(gonio, 'Si', (2, 2, 0), energy_keV=17.0," in page.code[-1].value


def test_energy_and_wavelength_stay_in_sync(page):
    page.number_input(key="energy_keV").set_value(20.0).run()
    assert page.number_input(key="wavelength_A").value == pytest.approx(HC_KEV_ANGSTROM / 20.0, rel=1e-12)
    assert "energy_keV=20.0," in page.code[-1].value
    page.number_input(key="wavelength_A").set_value(0.5).run()
    assert page.number_input(key="energy_keV").value == pytest.approx(HC_KEV_ANGSTROM / 0.5, rel=1e-12)
    assert not page.exception


@pytest.mark.parametrize("name", ["Si", "LiNbO3"])
def test_brightest_reachable_reflection_is_selected_by_default(page, name):
    page.selectbox(key="bundled_cif").set_value(name).run()
    brightest = reflection_table(read_cif(name), 17.0, Instrument()).brightest().hkl
    assert page.selectbox(key="reflection").value == brightest
    assert page.selectbox(key="equivalent").value == brightest
    assert "proposed (brightest reachable)" in page.code[0].value


def test_angles_shown_are_the_librarys(page):
    """Al2O3 at 20 keV, horizontal plane, (0 0 1) up and [1 0 0] out, one equivalent of
    (1 0 4): the angles shown are orient()'s; the command shown drives a goniometer there."""
    page.selectbox(key="bundled_cif").set_value("Al2O3").run()
    page.number_input(key="energy_keV").set_value(20.0)
    page.radio(key="scattering_plane").set_value("horizontal")
    page.text_input(key="up_indices").set_value("0 0 1")
    page.radio(key="exit_kind").set_value("uvw")
    page.text_input(key="exit_indices").set_value("1 0 0").run()
    page.selectbox(key="reflection").set_value((1, 0, 4)).run()
    page.selectbox(key="equivalent").set_value((0, 1, -4)).run()
    assert not page.exception and not page.error
    table = reflection_table(read_cif("Al2O3"), 20.0, Instrument(2.0, 40.0, "horizontal"))
    angles = orient(table, (0, 1, -4), Mounting(Facet((0, 0, 1)), Facet((1, 0, 0), "uvw"))).angles
    expected = {"omega": angles.omega_deg, "chi": angles.chi_deg, "phi": angles.phi_deg}
    assert shown_angles(page) == pytest.approx(expected, abs=5e-5)

    from bluesky import RunEngine
    from ophyd.sim import det

    from xrd_bluesky.sim_devices.stage import Goniometer

    gonio = Goniometer(name="gonio")
    exec(page.code[-1].value, {"RE": RunEngine({}), "gonio": gonio, "det": det})
    assert {"omega": gonio.omega.position, "chi": gonio.chi.position, "phi": gonio.phi.position} == \
        pytest.approx(expected, abs=1e-9)


def test_bad_cif_upload_is_a_named_error(page):
    page.radio(key="cif_origin").set_value("upload").run()
    assert page.info and not page.error  # asks for a file
    page.file_uploader(key="cif_upload").set_value(("broken.cif", b"this is not a CIF\n", "chemical/x-cif")).run()
    assert not page.exception
    message = page.error[0].value
    assert message.startswith("SampleError: cannot read CIF broken.cif")
    assert "workdir" not in page.session_state  # parsed in memory: the page has no folder to write to
    page.file_uploader(key="cif_upload").set_value(("huge.cif", b"#" * (2 * 2**20 + 1), "chemical/x-cif")).run()
    assert page.error[0].value.startswith("ResourceLimitError: uploaded CIF 'huge.cif' is 2.0 MB, more than")


def test_upload_with_a_plausibility_warning_is_planned_with_a_notice(page):
    text = Path(read_cif("Si").source).read_text().replace("_atom_site_occupancy", "_atom_site_occupancy\n"
                                                           "_atom_site_U_iso_or_equiv").replace("1.0\n", "1.0 2.5\n")
    page.radio(key="cif_origin").set_value("upload").run()
    page.file_uploader(key="cif_upload").set_value(("hot_si.cif", text.encode(), "chemical/x-cif")).run()
    assert not page.exception and not page.error
    assert any("U_iso = 2.5 A^2" in warning.value for warning in page.warning)
    assert "RE(dfxrm_align(gonio, 'hot_si.cif'," in page.code[-1].value


def test_structure_notices_are_shown(page):
    """A CIF that leaves the origin choice open (Si at 0 0 0 under 'F d -3 m', no
    operations): the reader's notice naming both choices is a warning on the page."""
    text = (Path(read_cif("Si").source).read_text().replace("_space_group_name_Hall            '-F 4vw 2vw 3'\n", "")
            .replace("'F d -3 m :2'", "'F d -3 m'").replace("Si1 Si 0.125 0.125 0.125", "Si1 Si 0 0 0"))
    page.radio(key="cif_origin").set_value("upload").run()
    page.file_uploader(key="cif_upload").set_value(("wyckoff_si.cif", text.encode(), "chemical/x-cif")).run()
    assert not page.exception and not page.error
    assert any("origin choice 1" in warning.value for warning in page.warning), [w.value for w in page.warning]


def test_3d_view_has_every_part_and_is_orthographic(opened):
    page, _ = opened
    spec = json.loads(page.get("plotly_chart")[0].proto.spec)
    names = [trace.get("name", "") for trace in spec["data"]]
    for part in ("sample box", "unit cell", "atoms Si", "incident beam", "diffracted beam", "objective lens (CRL)",
                 "omega stage", "chi stage", "phi stage"):
        assert any(name.startswith(part) for name in names), (part, names)
    scene = spec["layout"]["scene"]
    assert scene["camera"]["projection"]["type"] == "orthographic"
    assert [scene[axis]["title"]["text"] for axis in ("xaxis", "yaxis", "zaxis")] == \
        ["x, beam (um)", "y (um)", "z, up (um)"]
    dimensions = next(trace for trace in spec["data"] if trace.get("name") == "sample dimensions")
    assert dimensions["text"] == ["thickness 100 um", "width 0.3 mm", "height 0.3 mm"]


def test_logbook_pdf_is_offered(opened):
    page, button = opened
    assert page.download_button(key="pdf").label == "one-page PDF for the logbook"
    assert button.call_args.args[1].startswith(b"%PDF")
    assert button.call_args.kwargs["file_name"] == "Si_dfxrm.pdf"


def test_crl_focal_length_shown_is_the_science_functions(page):
    page.selectbox(key="lens_material").set_value("diamond (C)")
    page.number_input(key="lens_radius_um").set_value(100.0)
    page.number_input(key="n_lenses").set_value(12).run()
    shown = next(m.value for m in page.metric if m.label == "CRL focal length f (m)")
    formula, density = LENS_MATERIALS["diamond (C)"]
    assert shown == f"{focal_length_m(100.0, 12, formula, 17.0, density):.5g}"
    spec = json.loads(page.get("plotly_chart")[0].proto.spec)
    assert any(trace.get("name", "").endswith(f"f = {float(shown):.4g} m") for trace in spec["data"])


def test_planner_command_names_the_missing_extra(monkeypatch, capsys):
    """Without Streamlit, ``xrd-bluesky planner`` says which extra to install (status 2)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "streamlit" else real(name))
    assert main(["planner", "--port", "8599"]) == 2
    assert 'needs streamlit: pip install "xrd-bluesky[web]"' in capsys.readouterr().err
