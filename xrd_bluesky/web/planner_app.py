"""The DF-XRM planner page: a Streamlit script, thin over
:mod:`xrd_bluesky.web.planner_logic`. Start it with ``xrd-bluesky planner``.

Nothing is fetched at run time (the bundled CIFs are in the package) and nothing is
written: an uploaded CIF is checked for size and parsed in memory, the PDF is made in
memory.
"""

from __future__ import annotations

import streamlit as st

from xrd_bluesky.cli.dfxrm import summary_lines
from xrd_bluesky.errors import XRDBlueskyError
from xrd_bluesky.science import units
from xrd_bluesky.science.dfxrm.attenuation import ENERGY_RANGE_KEV
from xrd_bluesky.science.dfxrm.cif_structure import bundled_cif_names
from xrd_bluesky.science.dfxrm.compound_refractive_lens import LENS_MATERIALS
from xrd_bluesky.science.dfxrm.orientation import Facet, Mounting
from xrd_bluesky.science.dfxrm.reflection_table import SCATTERING_PLANES, Instrument
from xrd_bluesky.web import planner_logic as logic


def _wavelength_A(energy: float) -> float:
    """X-ray wavelength (A) of a photon energy (keV)."""
    return units.wavelength_m(energy) * 1e10


def _energy_keV(wavelength_A: float) -> float:
    """Photon energy (keV) of an X-ray wavelength (A)."""
    return units.energy_keV(wavelength_A * 1e-10)


#: Photon energy (keV) when the page opens.
START_ENERGY_KEV = 17.0
#: Wavelengths (A) of the planning's energy range.
WAVELENGTH_RANGE_A = (_wavelength_A(ENERGY_RANGE_KEV[1]), _wavelength_A(ENERGY_RANGE_KEV[0]))
FACET_KINDS = {"hkl": "plane (hkl)", "uvw": "direction [uvw]"}

state = st.session_state
if "energy_keV" not in state:
    state.energy_keV = START_ENERGY_KEV
    state.wavelength_A = _wavelength_A(START_ENERGY_KEV)


def _energy_changed() -> None:
    state.wavelength_A = min(max(_wavelength_A(state.energy_keV), WAVELENGTH_RANGE_A[0]),
                             WAVELENGTH_RANGE_A[1])


def _wavelength_changed() -> None:
    state.energy_keV = min(max(_energy_keV(state.wavelength_A), ENERGY_RANGE_KEV[0]), ENERGY_RANGE_KEV[1])


def _fail(exc: XRDBlueskyError) -> None:
    """Show a domain error by name (without the session folder's path) and end this run."""
    st.error(f"{type(exc).__name__}: {exc}")
    st.stop()


st.set_page_config(page_title="DF-XRM planner", layout="wide")
st.title("DF-XRM planner")
st.caption("Reflections, attenuation, goniometer angles and the Bluesky command for dark-field X-ray microscopy, "
           "from a CIF. Lab frame: x along the beam, z up.")

with st.sidebar:
    st.header("Crystal")
    origin = st.radio("CIF", ["bundled", "upload"], key="cif_origin", horizontal=True,
                      format_func={"bundled": "bundled CIF", "upload": "upload a CIF"}.get)
    if origin == "bundled":
        names = bundled_cif_names()
        cif_name = st.selectbox("bundled CIF", names, index=names.index("Si"), key="bundled_cif")
        uploaded = None
    else:
        uploaded = st.file_uploader(f"CIF file (at most {logic.MAX_CIF_BYTES / 2**20:g} MB)", type=["cif"],
                                    key="cif_upload")
    st.header("Beam")
    st.number_input("photon energy (keV)", min_value=ENERGY_RANGE_KEV[0], max_value=ENERGY_RANGE_KEV[1], step=0.1,
                    format="%.4f", key="energy_keV", on_change=_energy_changed)
    st.number_input("wavelength (A)", min_value=WAVELENGTH_RANGE_A[0], max_value=WAVELENGTH_RANGE_A[1], step=0.001,
                    format="%.6f", key="wavelength_A", on_change=_wavelength_changed)
    st.header("Sample")
    thickness_um = st.number_input("thickness along the exit normal (um)", min_value=0.1, max_value=1e5,
                                   value=100.0, step=10.0, key="thickness_um")
    width_mm = st.number_input("width (mm)", min_value=0.001, max_value=100.0, value=0.3, step=0.1, key="width_mm")
    height_mm = st.number_input("height along the up normal (mm)", min_value=0.001, max_value=100.0, value=0.3,
                                step=0.1, key="height_mm")
    facets = {}
    for which, default_kind, default, where in (("up", "hkl", "0 0 1", "+z"), ("exit", "uvw", "1 0 0", "+x")):
        kind = st.radio(f"{which} facet as", list(FACET_KINDS), index=list(FACET_KINDS).index(default_kind),
                        format_func=FACET_KINDS.get, horizontal=True, key=f"{which}_kind")
        facets[which] = (kind, st.text_input(f"{which} facet indices (normal along {where} at zero angles)",
                                             default, key=f"{which}_indices"))
    st.header("Instrument")
    two_theta_min_deg = st.number_input("2theta min (deg)", 0.0, 180.0, 2.0, 0.5, key="two_theta_min_deg")
    two_theta_max_deg = st.number_input("2theta max (deg)", 0.0, 180.0, 40.0, 0.5, key="two_theta_max_deg")
    plane = st.radio("scattering plane", SCATTERING_PLANES, horizontal=True, key="scattering_plane")
    st.header("Objective lens (CRL)")
    lens_material = st.selectbox("lens material", list(LENS_MATERIALS), key="lens_material")
    lens_radius_um = st.number_input("apex radius R (um)", min_value=1.0, max_value=5000.0, value=50.0, step=5.0,
                                     key="lens_radius_um")
    n_lenses = int(st.number_input("number of lenses N", min_value=1, max_value=1000, value=30, step=1,
                                   key="n_lenses"))

energy_keV = state.energy_keV
try:
    if origin == "bundled":
        cif, crystal_argument = cif_name, cif_name
    elif uploaded is None:
        st.info(f"Upload a CIF (at most {logic.MAX_CIF_BYTES / 2**20:g} MB) in the sidebar, or choose a bundled one.")
        st.stop()
    else:
        cif, crystal_argument = logic.read_uploaded_cif(uploaded.name, uploaded.getvalue()), uploaded.name
    mounting = Mounting(*(Facet(logic.parse_indices(text, f"{which} facet"), kind)
                          for which, (kind, text) in facets.items()))
    instrument = Instrument(two_theta_min_deg, two_theta_max_deg, plane)
    proposed = logic.make_plan(cif, energy_keV, instrument, None, mounting, thickness_um)
    lens = logic.objective(lens_material, lens_radius_um, n_lenses, energy_keV)
except XRDBlueskyError as exc:
    _fail(exc)

for notice in proposed.notices:
    st.warning(notice)
table = proposed.plan.table
structure = table.structure
st.subheader(f"{structure.name}: {structure.formula}, {structure.space_group.xhm()}, Z = {structure.formula_units}, "
             f"{structure.density_g_cm3:.4f} g/cm^3")
st.caption(f"{structure.source}; {energy_keV:.4f} keV, lambda = {table.wavelength_A:.6f} A; attenuation length "
           f"{proposed.plan.attenuation_length_um:.2f} um")

left, right = st.columns(2)
with left:
    st.markdown(f"**Reflections** in 2theta {instrument.two_theta_min_deg:g}-{instrument.two_theta_max_deg:g} deg "
                "(click a column to sort)")
    st.dataframe(logic.reflection_dataframe(table), hide_index=True, column_config={
        "d (A)": st.column_config.NumberColumn(format="%.5f"),
        "2theta (deg)": st.column_config.NumberColumn(format="%.4f"),
        "|F|^2 (e^2)": st.column_config.NumberColumn(format="%.1f"),
        "I_rel (max 100)": st.column_config.NumberColumn(format="%.1f", help="|F|^2 relative to the brightest")})
    brightest = proposed.plan.solution.reflection.hkl
    labels = {r.hkl: logic.reflection_label(r) + ("  (brightest)" if r.hkl == brightest else "")
              for r in table.reflections}
    if state.get("reflection") not in labels or state.get("reflection_of") != structure.source:
        state.reflection, state.reflection_of = brightest, structure.source
    chosen = st.selectbox("reflection to orient", list(labels), key="reflection", format_func=labels.get)
    equivalents = logic.laue_equivalents(table, chosen)
    if state.get("equivalent") not in equivalents:
        state.equivalent = chosen
    hkl = st.selectbox("equivalent to bring in condition", equivalents, key="equivalent", format_func=logic.hkl_text)
try:
    result = proposed if hkl == brightest else logic.make_plan(cif, energy_keV, instrument, hkl, mounting,
                                                               thickness_um)
except XRDBlueskyError as exc:
    _fail(exc)
plan = result.plan
with right:
    st.markdown(f"**Goniometer** ({instrument.scattering_plane} scattering plane) for "
                f"{logic.hkl_text(plan.solution.reflection.hkl)}")
    for column, (axis, angle) in zip(st.columns(3), (("omega", plan.solution.angles.omega_deg),
                                                     ("chi", plan.solution.angles.chi_deg),
                                                     ("phi", plan.solution.angles.phi_deg))):
        column.metric(f"{axis} (deg)", logic.angle_text(angle))
    st.dataframe(logic.angles_dataframe(plan), hide_index=True, column_config={
        "angle (deg)": st.column_config.NumberColumn(format="%.4f"),
        "rocking sensitivity (deg/deg)": st.column_config.NumberColumn(format="%.4f")})
    st.markdown("**Plan and beam path**")
    st.code("\n".join(summary_lines(plan)), language=None, wrap_lines=True)

st.markdown("**3D view** (drag to rotate, scroll to zoom; orthographic)")
view, lens_column = st.columns([4, 1])
with lens_column:
    st.metric("CRL focal length f (m)", f"{lens.focal_length_m:.5g}")
    st.caption(f"f = R / (2 N delta): {lens.n_lenses} {lens.material} lenses of R = {lens.radius_um:g} um at "
               f"{energy_keV:.4f} keV (thin lens; delta from xraylib)")
with view:
    st.plotly_chart(logic.scene_figure(plan, width_mm * 1e3, height_mm * 1e3, lens), key="scene",
                    config={"displaylogo": False})

attenuation, transmission = st.columns(2)
attenuation.pyplot(logic.attenuation_figure(plan))
transmission.pyplot(logic.transmission_figure(plan))

st.markdown("**For the logbook and the beamline**")
st.download_button("one-page PDF for the logbook", logic.logbook_pdf(plan), file_name=f"{structure.name}_dfxrm.pdf",
                   mime="application/pdf", key="pdf")
st.code(logic.bluesky_command(plan, crystal_argument), language="python")
