"""Crystal structures from CIF files, read and expanded with gemmi, and checked for plausibility.

gemmi (CCP4 / Global Phasing) parses the small-molecule CIF and supplies the space
group and its symmetry operations; every site of the asymmetric unit is expanded to
the full unit cell with those operations, images closer than :data:`SITE_TOLERANCE_A`
(periodic) being one atom. The result is a :class:`~xrd_bluesky.science.crystal.Crystal`
(whose |F|^2 uses xraylib's form factors, each weighted by its site's occupancy) with the
space group, the formula unit, Z and the density of the cell content.

Isotropic displacement parameters (``_atom_site_U_iso_or_equiv`` or ``B_iso``) are kept as
B = 8 pi^2 U (A^2); a CIF without them gives B = 0 (static lattice). Anisotropic
parameters are not used.

Partly occupied sites (``_atom_site_occupancy`` below 1: vacancies, or elements sharing a
site as in a solid solution) are supported: an atom's occupancy multiplies its scattering
factor and its share of the composition, hence the formula (e.g. ``Fe0.95O``) and the
density. Z is the largest number dividing the number of positions of every element. Atoms
closer than :data:`MIN_DISTANCE_A` are accepted when their occupancies add up to at most 1
(they are alternatives: a shared or split site).

Origin choices. A CIF that lists no symmetry operations and no (valid) Hall symbol leaves
the space group to its Hermann-Mauguin symbol, and for the groups that gemmi's table gives
two origin choices (``:1`` and ``:2``, e.g. ``F d -3 m``) a symbol without the suffix does
not say which: gemmi (and Dans_Diffraction) silently take origin choice 2. Silicon written
with Si at (0, 0, 0), as in Wyckoff's tables (origin choice 1), then has Z = 16 and twice
its density. :func:`read_cif` expands such a CIF with both origin choices and takes the
one that ``_space_group_IT_coordinate_system_code``, ``_cell_formula_units_Z`` (with
``_chemical_formula_sum``) or ``_exptl_crystal_density_diffrn`` fits; without them the
one that is physically plausible (the other refused by the checks below, or putting atoms
markedly closer relative to their covalent radii); if nothing decides, origin choice 2.
Either way :attr:`CrystalStructure.notices` says so, naming both choices with their Z and
density.

Never a silent wrong result: :func:`read_cif` refuses with an
:class:`~xrd_bluesky.errors.ImplausibleInputError` (naming the CIF, the key or site, the
value and the plausible range) cell lengths outside :data:`CELL_LENGTH_RANGE_A`, angles
outside :data:`CELL_ANGLE_RANGE_DEG` (radians?) or making no cell or one thinner than
:data:`MIN_CELL_HEIGHT_A`, a U_iso or B_iso below -:data:`U_ISO_ROUNDING_A2`, an occupancy
outside (0, 1], two atoms of the cell closer than :data:`MIN_DISTANCE_A` whose occupancies
add up to more than 1 (a site listed twice, a site off its special position, another origin
choice) and a density outside :data:`DENSITY_RANGE_G_CM3`; it warns
(:class:`~xrd_bluesky.errors.PlausibilityWarning`) of a U_iso above :data:`U_ISO_WARNED_A2`.

CIFs bundled with the package (``xrd_bluesky/data/cif``) are found by name, e.g. ``"Si"``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np
import xraylib

from ...errors import ImplausibleInputError, PlausibilityWarning, SampleError
from ..crystal import Atom, Crystal

#: Avogadro constant (1/mol, exact in SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: An occupancy up to 1 + this is 1 (rounding); atoms closer than :data:`MIN_DISTANCE_A`
#: may have occupancies adding up to 1 + this.
OCCUPANCY_TOLERANCE = 1e-3

#: Two positions closer than this (A, periodic) are one: the images of a site are one atom,
#: and two sites there are a site listed twice. Coordinates given to 4 decimals put a site
#: meant to be on a special position within 0.005 A of it even on a 30 A axis; the
#: shortest bond (X-H, 0.8-1.0 A by X-rays) is 80 times longer.
SITE_TOLERANCE_A = 0.01
#: Two atoms of the cell closer than this (A, periodic) are refused unless their occupancies
#: add up to at most 1: the shortest distances in solids are X-H bonds, 0.8-1.0 A as seen by
#: X-rays (H2: 0.74 A).
MIN_DISTANCE_A = 0.5
#: Plausible cell lengths (A): the shortest lattice translation of any crystal is 2.29 A
#: (Be); inorganic and small-molecule cells stay below ~100 A, protein cells below ~1000 A.
CELL_LENGTH_RANGE_A = (1.0, 1000.0)
#: Plausible cell angles (deg): conventional and reduced cells have 60-120 deg, rhombohedral
#: primitive cells of long-period layered crystals down to ~20 deg (Bi2Te3: 24 deg); an
#: angle below 3.2 (pi rounded up) is likely in radians.
CELL_ANGLE_RANGE_DEG = (5.0, 175.0)
#: Largest cell angle (deg) taken for a value in radians in the error message.
RADIANS_LIMIT = 3.2
#: Smallest height of the cell across each axis, the spacing of the (100), (010) and (001)
#: lattice planes (A): a thinner cell is nearly flat (angles that nearly make no cell).
#: Equal to :data:`MIN_DISTANCE_A`, it confines the search for close atoms to 27 cells.
MIN_CELL_HEIGHT_A = MIN_DISTANCE_A
#: A U_iso (A^2) between -this and 0 is zero within rounding (CIFs give U to 1e-4 A^2) and
#: is taken as 0; below it is refused.
U_ISO_ROUNDING_A2 = 1e-4
#: A U_iso (A^2) above this (rms displacement 1 A) is reported: ordered solids have
#: 0.002-0.05 A^2, loosely bound ions and guests ~0.2 A^2; more is likely a B in the U column.
U_ISO_WARNED_A2 = 1.0
#: Plausible density of a crystal (g/cm^3), from solid hydrogen (0.086) and the most open
#: frameworks (MOFs, ~0.13) to osmium (22.6).
DENSITY_RANGE_G_CM3 = (0.05, 25.0)
#: Atom pairs times lattice translates compared at once when looking for close atoms
#: (bounds the memory to ~20 MB).
_PAIR_BLOCK = 1 << 18

#: A CIF's ``_exptl_crystal_density_diffrn`` fits an origin choice whose density is within
#: this fraction of it: both come from the same cell and content (CIFs give 3-4 digits;
#: atomic weights of other tables differ by < 0.1 %). The two choices differ in density by
#: the atoms one of them puts on special positions (Si: a factor of 2); a density within
#: this fraction of both fits both and decides nothing.
DENSITY_MATCH_FRACTION = 0.02
#: The cell content of an origin choice fits ``_cell_formula_units_Z`` x
#: ``_chemical_formula_sum`` when each element's count is within this fraction (occupancies
#: are given to 2-3 digits).
FORMULA_MATCH_FRACTION = 0.01
#: An origin choice puts atoms too close when its closest contact, relative to the sum of
#: the two atoms' covalent radii, is shorter than that sum and shorter than this fraction of
#: the other choice's closest relative contact: coordinates written for one choice and
#: expanded with the other's operations put symmetry images near each other (Si at (0, 0, 0)
#: read as origin choice 2: Si-Si 1.92 A, 0.86 of the radii, against the bond of 2.35 A,
#: 1.06). Bonds range from 0.77 (triple bonds) to ~1.1 of the sum, so a short contact alone
#: proves nothing; one common to both choices (between listed sites) leaves them undecided.
CONTACT_MARGIN = 0.9
#: Closest contacts are looked for up to this factor times the largest sum of covalent radii
#: (every bond lies within it).
CONTACT_SEARCH_FACTOR = 1.5
#: The CIF items that can decide an origin choice, in the order they are read.
ORIGIN_ITEMS = ("_space_group_IT_coordinate_system_code", "_cell_formula_units_Z", "_exptl_crystal_density_diffrn")


@dataclass(frozen=True)
class SiteAtom(Atom):
    """An atom of a CIF's unit cell: :class:`~xrd_bluesky.science.crystal.Atom` plus its site.

    Attributes
    ----------
    label : str
        The site (``_atom_site_label``) the atom is an image of.
    """

    label: str = ""


@dataclass(frozen=True)
class CrystalStructure:
    """A crystal structure read from a CIF.

    Attributes
    ----------
    crystal : Crystal
        Lattice (A, deg) and every atom of the unit cell, with its site label and occupancy.
    space_group : gemmi.SpaceGroup
        The space group, in the setting of the CIF (the origin choice taken, see ``notices``).
    formula : str
        Formula unit, elements in the order of the CIF's sites, e.g. ``"LiNbO3"``; counts
        are occupancy-weighted (``"Si0.5Ge0.5"``).
    formula_units : int
        Formula units per cell, Z.
    density_g_cm3 : float
        Density of the cell content, sum of occupancy x atomic mass / (N_A * V) (g/cm^3).
    source : str
        The CIF the structure was read from.
    notices : tuple of str
        What the reader had to decide and how, one sentence group each, to be shown with the
        structure: the origin choice taken for a CIF that leaves it open (both choices named
        with their Z and density). Empty when the CIF left nothing open.
    """

    crystal: Crystal
    space_group: gemmi.SpaceGroup
    formula: str
    formula_units: int
    density_g_cm3: float
    source: str
    notices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The crystal's name (the CIF data block)."""
        return self.crystal.name


@dataclass(frozen=True)
class _Site:
    """A site of the CIF's asymmetric unit, checked: label, element, fractional
    coordinates, B (A^2) and occupancy."""

    label: str
    element: str
    fract: tuple[float, float, float]
    b_iso_A2: float
    occupancy: float


def cell_volume_A3(crystal: Crystal) -> float:
    """Unit-cell volume (A^3) of ``crystal``, 1 / sqrt(det G*)."""
    return 1.0 / math.sqrt(float(np.linalg.det(crystal.reciprocal_metric())))


def bundled_cif_names() -> list[str]:
    """Names of the CIFs shipped with the package (file names without ``.cif``)."""
    folder = resources.files("xrd_bluesky") / "data" / "cif"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".cif"))


def resolve_cif(name_or_path: str | Path) -> Path:
    """The CIF file for a path or for the name of a bundled CIF (case-insensitive).

    Raises
    ------
    SampleError
        If ``name_or_path`` is neither an existing file nor a bundled name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    wanted = str(name_or_path).lower().removesuffix(".cif")
    for name in bundled_cif_names():
        if name.lower() == wanted:
            return Path(str(resources.files("xrd_bluesky") / "data" / "cif" / f"{name}.cif"))
    raise SampleError(f"{name_or_path!r} is neither a CIF file nor a bundled CIF "
                      f"(bundled: {', '.join(bundled_cif_names())})")


def read_cif(name_or_path: str | Path) -> CrystalStructure:
    """Read a CIF (path or bundled name), check it and expand it to the full unit cell.

    Parameters
    ----------
    name_or_path : str or Path
        A CIF file, or the name of a bundled CIF such as ``"Si"`` or ``"Al2O3"``.

    Returns
    -------
    CrystalStructure
        With ``notices`` naming the origin choice taken if the CIF left it open.

    Raises
    ------
    SampleError
        If the file cannot be parsed, misses a cell parameter, has no space group, no
        sites, a coordinate that is not a number or an element xraylib does not know.
    ImplausibleInputError
        If the cell, a displacement parameter, an occupancy, the distance of two atoms or
        the density is implausible (see the module's description); for a CIF that leaves the
        origin choice open, if the choice its items decide is, or if both choices are.

    Warns
    -----
    PlausibilityWarning
        If a site's U_iso is above :data:`U_ISO_WARNED_A2`.
    """
    path = resolve_cif(name_or_path)
    return _structure(_read_block(path), path)


def read_cif_text(text: str, name: str) -> CrystalStructure:
    """Read a CIF given as text (an upload, parsed in memory) as :func:`read_cif` reads a file.

    Parameters
    ----------
    text : str
        The CIF's content.
    name : str
        What to call it in messages and as the structure's ``source`` (e.g. the uploaded
        file's name).

    Raises
    ------
    SampleError, ImplausibleInputError
        As :func:`read_cif`.
    """
    try:
        block = gemmi.cif.read_string(text).sole_block()
    except (RuntimeError, ValueError) as exc:
        raise SampleError(f"cannot read CIF {name}: {exc}") from exc
    return _structure(block, Path(name))


def _structure(block: gemmi.cif.Block, path: Path) -> CrystalStructure:
    """The checked, expanded structure of a CIF's data block (``path`` names it)."""
    lattice = _checked_lattice(block, path)
    small = _small_structure(block, path)
    if small.spacegroup is None:
        raise SampleError(f"CIF {path} gives no space group (symmetry operations, Hall or H-M symbol)")
    if not small.sites:
        raise SampleError(f"CIF {path} has no atom sites")
    sites = [_checked_site(site, path) for site in small.sites]
    choices = _open_origin_choices(small, lattice)
    if not choices:
        structure = _expanded(sites, small.spacegroup, lattice, path)
        _check(structure, path)
        return structure
    return _chosen_origin(choices, sites, lattice, block, small.spacegroup_hm, path)


def _read_block(path: Path) -> gemmi.cif.Block:
    """The CIF's single data block."""
    try:
        return gemmi.cif.read(str(path)).sole_block()
    except (RuntimeError, ValueError, OSError) as exc:
        raise SampleError(f"cannot read CIF {path}: {exc}") from exc


def _small_structure(block: gemmi.cif.Block, path: Path) -> gemmi.SmallStructure:
    """The block's cell, symmetry and sites, read by gemmi."""
    try:
        return gemmi.make_small_structure_from_block(block)
    except (RuntimeError, ValueError) as exc:
        raise SampleError(f"cannot read CIF {path}: {exc}") from exc


def _cell_parameter(block: gemmi.cif.Block, key: str, path: Path) -> float:
    """The value of ``_cell_<key>`` (NaN if it is no number); it must be given (without it
    gemmi would take a 1 A cubic cell)."""
    value = block.find_value(f"_cell_{key}")
    if value in (None, "?", "."):
        raise SampleError(f"CIF {path} gives no _cell_{key}")
    return gemmi.cif.as_number(value)


def _checked_lattice(block: gemmi.cif.Block, path: Path) -> Crystal:
    """The CIF's lattice (no atoms yet): lengths within :data:`CELL_LENGTH_RANGE_A`, angles
    within :data:`CELL_ANGLE_RANGE_DEG` making a cell at least :data:`MIN_CELL_HEIGHT_A` thick."""
    lengths_A = [_cell_parameter(block, f"length_{key}", path) for key in "abc"]
    angles_deg = [_cell_parameter(block, f"angle_{key}", path) for key in ("alpha", "beta", "gamma")]
    for key, value in zip("abc", lengths_A):
        low, high = CELL_LENGTH_RANGE_A
        if not low <= value <= high:
            raise ImplausibleInputError(f"CIF {path}: _cell_length_{key} = {value:g} A is outside the plausible "
                                        f"range {low:g}-{high:g} A")
    for key, value in zip(("alpha", "beta", "gamma"), angles_deg):
        low, high = CELL_ANGLE_RANGE_DEG
        if not low <= value <= high:
            hint = f" (radians? {value:g} rad = {math.degrees(value):.4g} deg)" if 0 < value < RADIANS_LIMIT else ""
            raise ImplausibleInputError(f"CIF {path}: _cell_angle_{key} = {value:g} deg is outside the plausible "
                                        f"range {low:g}-{high:g} deg{hint}")
    cosines = [math.cos(math.radians(v)) for v in angles_deg]
    if 1.0 - sum(c * c for c in cosines) + 2.0 * math.prod(cosines) <= 0.0:
        raise ImplausibleInputError(f"CIF {path}: cell angles alpha, beta, gamma = {angles_deg} deg make no cell "
                                    "(each must be less than the sum of the other two, all three less than 360)")
    lattice = Crystal(block.name or path.stem, *lengths_A, *angles_deg)
    heights_A = _cell_heights_A(lattice)
    if heights_A.min() < MIN_CELL_HEIGHT_A:
        axis = "abc"[int(np.argmin(heights_A))]
        raise ImplausibleInputError(f"CIF {path}: the cell is only {heights_A.min():.3g} A thick across {axis} "
                                    f"(at least {MIN_CELL_HEIGHT_A} A): the angles alpha, beta, gamma = "
                                    f"{angles_deg} deg nearly make no cell")
    return lattice


def _cell_heights_A(lattice: Crystal) -> np.ndarray:
    """Heights (A) of the cell across a, b and c: spacings of the (100), (010) and (001) planes."""
    return 1.0 / np.sqrt(np.diag(lattice.reciprocal_metric()))


def _checked_site(site: gemmi.SmallStructure.Site, path: Path) -> _Site:
    """A site with numeric coordinates, an element xraylib knows, a plausible occupancy and B."""
    fract = (site.fract.x, site.fract.y, site.fract.z)
    if not all(math.isfinite(v) for v in fract):
        raise SampleError(f"site {site.label} of {path}: fractional coordinates {fract} are not all numbers")
    element = site.element.name
    try:
        xraylib.SymbolToAtomicNumber(element)
    except ValueError as exc:
        raise SampleError(f"site {site.label} of {path}: element {element!r} unknown to xraylib") from exc
    if not 0.0 < site.occ <= 1.0 + OCCUPANCY_TOLERANCE:
        raise ImplausibleInputError(f"site {site.label} of CIF {path}: _atom_site_occupancy = {site.occ:g} is outside "
                                    "the plausible range 0-1 (a fraction of the site, above 0; a percentage?)")
    return _Site(site.label, element, fract, _b_iso_A2(site, path), min(site.occ, 1.0))


def _b_iso_A2(site: gemmi.SmallStructure.Site, path: Path) -> float:
    """B = 8 pi^2 U (A^2) of a site; a U within :data:`U_ISO_ROUNDING_A2` below 0 is 0."""
    u_A2 = site.u_iso
    detail = f"site {site.label} of CIF {path}: U_iso = {u_A2:.4g} A^2 (B_iso = {8 * math.pi**2 * u_A2:.4g} A^2)"
    if not u_A2 >= -U_ISO_ROUNDING_A2:
        raise ImplausibleInputError(f"{detail} is negative: a displacement parameter is >= 0 (U_iso above "
                                    f"-{U_ISO_ROUNDING_A2:g} A^2 is taken as 0)")
    if u_A2 > U_ISO_WARNED_A2:
        warnings.warn(f"{detail} is above {U_ISO_WARNED_A2:g} A^2 (rms displacement {math.sqrt(u_A2):.3g} A; "
                      "ordered solids 0.002-0.05 A^2): a B in the U column?", PlausibilityWarning, stacklevel=4)
    return 8.0 * math.pi**2 * max(u_A2, 0.0)


def _expanded(sites: list[_Site], space_group: gemmi.SpaceGroup, lattice: Crystal,
              path: Path) -> CrystalStructure:
    """The structure (not yet checked) with every atom of the cell: each site's distinct
    images under all symmetry operations of ``space_group``."""
    rotations, translations = _operations(space_group.hall)
    metric_A2 = lattice.metric()
    shifts = _lattice_shifts(lattice, SITE_TOLERANCE_A)
    atoms: list[SiteAtom] = []
    for site in sites:
        images = _distinct(np.mod(rotations @ site.fract + translations, 1.0), metric_A2, shifts)
        atoms += [SiteAtom(site.element, tuple(float(v) for v in xyz), site.b_iso_A2, occupancy=site.occupancy,
                           label=site.label)
                  for xyz in images]
    crystal = dataclasses.replace(lattice, atoms=tuple(atoms))
    z = reduce(math.gcd, Counter(atom.element for atom in atoms).values())
    content = _content(crystal)
    formula = "".join(el + ("" if f"{n / z:.4g}" == "1" else f"{n / z:.4g}") for el, n in content.items())
    cell_mass_g = sum(xraylib.AtomicWeight(xraylib.SymbolToAtomicNumber(el)) * n
                      for el, n in content.items()) / AVOGADRO_PER_MOL
    density = cell_mass_g / (cell_volume_A3(crystal) * 1e-24)
    return CrystalStructure(crystal, space_group, formula, z, density, str(path))


def _content(crystal: Crystal) -> dict[str, float]:
    """Atoms of each element in the cell, occupancy-weighted, in the order of the sites."""
    content: dict[str, float] = {}
    for atom in crystal.atoms:
        content[atom.element] = content.get(atom.element, 0.0) + atom.occupancy
    return content


@functools.lru_cache(maxsize=32)
def _operations(hall: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotation matrices (n, 3, 3) and translations (n, 3, fractional) of every operation
    of the space group with this Hall symbol, in gemmi's order."""
    ops = list(gemmi.symops_from_hall(hall))
    rotations = np.array([op.rot for op in ops], dtype=float) / gemmi.Op.DEN
    translations = np.array([op.tran for op in ops], dtype=float) / gemmi.Op.DEN
    rotations.flags.writeable = translations.flags.writeable = False
    return rotations, translations


def _distinct(images: np.ndarray, metric_A2: np.ndarray, shifts: np.ndarray) -> list[np.ndarray]:
    """The images (n, 3, fractional) in order, each dropped that is within
    :data:`SITE_TOLERANCE_A` (periodic, over the translations ``shifts``) of one kept before."""
    kept = []
    while len(images):
        kept.append(images[0])
        images = images[_periodic_distance_A(images - images[0], metric_A2, shifts) > SITE_TOLERANCE_A]
    return kept


def _lattice_shifts(lattice: Crystal, cutoff_A: float) -> np.ndarray:
    """The lattice translations (n, 3) that can bring two positions, whose fractional
    difference is wrapped to [-0.5, 0.5], closer than ``cutoff_A`` (A): |t_i| <=
    cutoff / height_i + 1/2, since a vector is at least |x_i| height_i long."""
    reach = np.floor(cutoff_A / _cell_heights_A(lattice) + 0.5).astype(int)
    return np.array(list(itertools.product(*(range(-m, m + 1) for m in reach))), dtype=float)


def _periodic_distance_A(difference: np.ndarray, metric_A2: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shortest length (A) of each fractional difference (..., 3) over the lattice
    translations ``shifts`` (n, 3) of its wrapped value."""
    candidates = (difference - np.rint(difference))[..., None, :] + shifts
    flat = candidates.reshape(-1, 3)  # one matrix product, not a stack of 1 x 3 ones
    squared_A2 = np.einsum("ij,ij->i", flat @ metric_A2, flat).reshape(candidates.shape[:-1])
    return np.sqrt(squared_A2.min(axis=-1))


def _check(structure: CrystalStructure, path: Path) -> None:
    """Refuse close atoms that are not alternatives (:func:`_check_distances`) and an
    implausible density (:func:`_check_density`)."""
    _check_distances(structure.crystal, path)
    _check_density(structure.density_g_cm3, structure.formula, structure.formula_units,
                   cell_volume_A3(structure.crystal), path)


def _check_distances(crystal: Crystal, path: Path) -> None:
    """Refuse two atoms of the cell closer than :data:`MIN_DISTANCE_A` (periodic) when the
    occupancies of either and the atoms that close to it add up to more than 1 (both are
    there), naming the closest such pair; the same position (within
    :data:`SITE_TOLERANCE_A`) is a site listed twice."""
    atoms = crystal.atoms
    fract = np.array([atom.position for atom in atoms])
    occupancy = np.array([atom.occupancy for atom in atoms])
    first, second, distance_A = _close_pairs(fract, crystal, MIN_DISTANCE_A)
    together = occupancy.copy()
    np.add.at(together, first, occupancy[second])
    np.add.at(together, second, occupancy[first])
    crowded = np.maximum(together[first], together[second]) > 1.0 + OCCUPANCY_TOLERANCE
    if not crowded.any():
        return
    k = np.flatnonzero(crowded)[np.argmin(distance_A[crowded])]
    i, j, distance = int(first[k]), int(second[k]), float(distance_A[k])
    total = f"{max(together[i], together[j]):.3g}"
    where = [f"({', '.join(f'{v:.4f}' for v in fract[n])})" for n in (i, j)]
    if distance <= SITE_TOLERANCE_A:
        raise ImplausibleInputError(f"sites {atoms[i].label} and {atoms[j].label} of CIF {path} put atoms at the same "
                                    f"position {where[0]} (within {SITE_TOLERANCE_A} A) whose occupancies add up to "
                                    f"{total}, more than 1: a site listed twice?")
    raise ImplausibleInputError(
        f"atoms of sites {atoms[i].label} at {where[0]} and {atoms[j].label} at {where[1]} of CIF {path} are "
        f"{distance:.3f} A apart, closer than {MIN_DISTANCE_A} A (X-H bonds are 0.8-1.0 A), with occupancies adding "
        f"up to {total}, more than 1: a site listed twice with other coordinates, a site off its special position, "
        "or coordinates of another origin choice?")


def _close_pairs(fract: np.ndarray, lattice: Crystal, cutoff_A: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices i < j (row by row) of the positions (n, 3, fractional) closer than
    ``cutoff_A`` (A, periodic), and their distances (A)."""
    metric_A2, shifts = lattice.metric(), _lattice_shifts(lattice, cutoff_A)
    n = len(fract)
    rows = max(1, _PAIR_BLOCK // (n * len(shifts)))
    found = [(np.empty(0, int), np.empty(0, int), np.empty(0))]
    for start in range(0, n - 1, rows):
        block = fract[start:start + rows]
        distance_A = _periodic_distance_A(fract[None, :, :] - block[:, None, :], metric_A2, shifts)
        later = np.arange(n)[None, :] > np.arange(start, start + len(block))[:, None]
        row, j = np.nonzero(later & (distance_A < cutoff_A))
        found.append((start + row, j, distance_A[row, j]))
    first, second, distance = (np.concatenate(parts) for parts in zip(*found))
    return first, second, distance


def _check_density(density_g_cm3: float, formula: str, z: int, volume_A3: float, path: Path) -> None:
    """Refuse a density outside :data:`DENSITY_RANGE_G_CM3`."""
    low, high = DENSITY_RANGE_G_CM3
    if not low <= density_g_cm3 <= high:
        raise ImplausibleInputError(
            f"CIF {path}: density {density_g_cm3:.4g} g/cm^3 of Z = {z} x {formula} in a cell of {volume_A3:.4g} A^3 "
            f"is outside the plausible range {low:g}-{high:g} g/cm^3 (solid hydrogen 0.086, osmium 22.6): cell "
            "lengths in another unit, or sites missing or repeated?")


@dataclass(frozen=True)
class _Contact:
    """The two atoms of a cell closest relative to the sum of their covalent radii."""

    first: str
    second: str
    distance_A: float
    radii_A: float

    @property
    def ratio(self) -> float:
        """Distance over the sum of the covalent radii."""
        return self.distance_A / self.radii_A

    def text(self) -> str:
        """The contact in words, e.g. ``"Si1 and Si1, 2.352 A apart, 1.06 times ..."``."""
        return (f"{self.first} and {self.second}, {self.distance_A:.3f} A apart, {self.ratio:.2f} times the sum of "
                f"their covalent radii, {self.radii_A:.2f} A")


@dataclass(frozen=True)
class _Candidate:
    """One origin choice of a CIF that leaves it open: its structure, why it is implausible
    (None if it passes the checks) and its closest contact (None if implausible, or if no
    two atoms are within :data:`CONTACT_SEARCH_FACTOR` times their covalent radii)."""

    structure: CrystalStructure
    error: ImplausibleInputError | None
    contact: _Contact | None

    @property
    def name(self) -> str:
        """``"origin choice 1"`` or ``"origin choice 2"``."""
        return f"origin choice {self.structure.space_group.ext}"

    @property
    def contact_ratio(self) -> float:
        """The closest contact over the sum of covalent radii (infinite without one)."""
        return self.contact.ratio if self.contact else math.inf

    def summary(self) -> str:
        """Z, formula and density (g/cm^3) the choice gives."""
        s = self.structure
        return (f"{self.name} ({s.space_group.xhm()}) gives Z = {s.formula_units} x {s.formula}, "
                f"{s.density_g_cm3:.4g} g/cm^3")

    def closest(self) -> str:
        """The closest contact in words."""
        if self.contact is None:
            return (f"{self.name} has no two atoms within {CONTACT_SEARCH_FACTOR:g} times the sum of their "
                    "covalent radii")
        return f"the closest atoms of {self.name} are {self.contact.text()}"


def _open_origin_choices(small: gemmi.SmallStructure, lattice: Crystal) -> tuple[gemmi.SpaceGroup, ...]:
    """Origin choices 1 and 2 of the space group (from gemmi's table) when the CIF leaves the
    choice to a Hermann-Mauguin symbol that does not make it: no symmetry operations, no
    valid Hall symbol, a symbol without ``:1`` or ``:2``. Empty otherwise."""
    if small.symops or _valid_hall(small.spacegroup_hall):
        return ()
    choices = tuple(gemmi.find_spacegroup_by_name(small.spacegroup_hm, lattice.alpha, lattice.gamma, prefer=choice)
                    for choice in "12")
    return choices if choices[0] != choices[1] else ()


def _valid_hall(hall: str) -> bool:
    """Whether ``hall`` is a Hall symbol gemmi reads (gemmi ignores an invalid one)."""
    try:
        gemmi.symops_from_hall(hall)
    except RuntimeError:
        return False
    return True


def _chosen_origin(choices: tuple[gemmi.SpaceGroup, ...], sites: list[_Site], lattice: Crystal,
                   block: gemmi.cif.Block, symbol: str, path: Path) -> CrystalStructure:
    """The structure of the origin choice the CIF's items decide, else the physically
    plausible one, else origin choice 2, with a notice naming both choices and why."""
    candidates = [_candidate(sites, space_group, lattice, path) for space_group in choices]
    evidence = _cif_evidence(block, candidates)
    decisive = {fits[0] for _, fits in evidence if len(fits) == 1}
    if len(decisive) == 1:
        k = decisive.pop()
        reason = "decided by the CIF's " + " and ".join(text for text, fits in evidence if fits == [k])
        rest = [(text, fits) for text, fits in evidence if fits != [k]]
        reason += f" (its {_said(rest, candidates)})" if rest else ""
        if candidates[k].error is not None:
            raise ImplausibleInputError(f"{candidates[k].error} (CIF {path} leaves the origin choice of {symbol!r} "
                                        f"open; {candidates[k].name} is {reason})")
    else:
        k, reason = _plausible_choice(candidates, evidence, symbol, path)
    notice = (f"CIF {path} gives space group {symbol!r} without symmetry operations or a Hall symbol, and the group "
              f"has two origin choices: {'; '.join(c.summary() for c in candidates)}. "
              f"Taken: {candidates[k].name}, {reason}.")
    return dataclasses.replace(candidates[k].structure, notices=(notice,))


def _candidate(sites: list[_Site], space_group: gemmi.SpaceGroup, lattice: Crystal, path: Path) -> _Candidate:
    """The sites expanded with one origin choice, checked."""
    structure = _expanded(sites, space_group, lattice, path)
    try:
        _check(structure, path)
    except ImplausibleInputError as exc:
        return _Candidate(structure, exc, None)
    return _Candidate(structure, None, _closest_contact(structure.crystal))


def _closest_contact(crystal: Crystal) -> _Contact | None:
    """The two atoms closest relative to the sum of their covalent radii (gemmi's, Cordero
    et al. 2008), alternatives (atoms closer than :data:`MIN_DISTANCE_A`, which passed the
    checks) left out; None if no two are within :data:`CONTACT_SEARCH_FACTOR` times the sum."""
    atoms = crystal.atoms
    radii_A = np.array([gemmi.Element(atom.element).covalent_r for atom in atoms])
    first, second, distance_A = _close_pairs(np.array([atom.position for atom in atoms]), crystal,
                                             CONTACT_SEARCH_FACTOR * 2 * radii_A.max())
    sums_A = radii_A[first] + radii_A[second]
    ratio = np.where(distance_A >= MIN_DISTANCE_A, distance_A / sums_A, math.inf)
    if ratio.min(initial=math.inf) == math.inf:
        return None
    k = int(np.argmin(ratio))
    return _Contact(atoms[first[k]].label, atoms[second[k]].label, float(distance_A[k]), float(sums_A[k]))


def _cif_evidence(block: gemmi.cif.Block, candidates: list[_Candidate]) -> list[tuple[str, list[int]]]:
    """Each of :data:`ORIGIN_ITEMS` the CIF gives, as ``"item = value"``, with the indices of
    the candidates it fits: the coordinate system code names one; Z fits the choice whose
    cell content is Z x ``_chemical_formula_sum`` (without a formula, whose Z is Z); the
    density one within :data:`DENSITY_MATCH_FRACTION`."""
    evidence = []
    code, z, density = (_item(block, item) for item in ORIGIN_ITEMS)
    if code is not None:
        evidence.append((f"{ORIGIN_ITEMS[0]} = {code}",
                         [k for k, c in enumerate(candidates) if c.structure.space_group.ext == code]))
    if z is not None:
        value, formula = gemmi.cif.as_number(z), _formula_sum(block)
        evidence.append((f"{ORIGIN_ITEMS[1]} = {z}",
                         [k for k, c in enumerate(candidates) if _fits_z(c.structure, value, formula)]))
    if density is not None:
        value = gemmi.cif.as_number(density)
        evidence.append((f"{ORIGIN_ITEMS[2]} = {density} g/cm^3",
                         [k for k, c in enumerate(candidates)
                          if abs(c.structure.density_g_cm3 - value) <= DENSITY_MATCH_FRACTION * value]))
    return evidence


def _item(block: gemmi.cif.Block, key: str) -> str | None:
    """The value of a CIF item as text, None if absent or unknown (``?``, ``.``)."""
    value = block.find_value(key)
    return None if value is None or gemmi.cif.is_null(value) else gemmi.cif.as_string(value).strip()


def _formula_sum(block: gemmi.cif.Block) -> dict[str, float] | None:
    """The CIF's ``_chemical_formula_sum`` (e.g. ``'Y Mn O3'``) as atoms per element; None
    if absent or not of that form."""
    text = _item(block, "_chemical_formula_sum")
    tokens = [re.fullmatch(r"([A-Z][a-z]?)(\d+(?:\.\d*)?|\.\d+)?", token) for token in (text or "").split()]
    if not tokens or not all(tokens):
        return None
    formula: dict[str, float] = {}
    for match in tokens:
        formula[match[1]] = formula.get(match[1], 0.0) + float(match[2] or 1)
    return formula


def _fits_z(structure: CrystalStructure, z: float, formula: dict[str, float] | None) -> bool:
    """Whether Z fits the structure: each element's count in the cell is Z times its count in
    the formula (within :data:`FORMULA_MATCH_FRACTION`); without a formula, Z is the
    structure's own (that of its reduced formula)."""
    if formula is None:
        return structure.formula_units == z
    return all(element in formula and math.isclose(count, z * formula[element], rel_tol=FORMULA_MATCH_FRACTION)
               for element, count in _content(structure.crystal).items())


def _said(evidence: list[tuple[str, list[int]]], candidates: list[_Candidate]) -> str:
    """What the CIF's items say, e.g. ``"_cell_formula_units_Z = 5 fits neither choice"``."""
    def who(fits: list[int]) -> str:
        return {0: "neither choice", 2: "both choices"}.get(len(fits)) or candidates[fits[0]].name
    return ", ".join(f"{text} fits {who(fits)}" for text, fits in evidence)


def _plausible_choice(candidates: list[_Candidate], evidence: list[tuple[str, list[int]]], symbol: str,
                      path: Path) -> tuple[int, str]:
    """The index of the physically plausible candidate and why, when the CIF's items do not
    decide: the only one passing the checks, else the one whose atoms do not overlap
    (:data:`CONTACT_MARGIN`), else origin choice 2 (gemmi's reading), saying nothing decides.

    Raises
    ------
    ImplausibleInputError
        If neither candidate passes the checks.
    """
    said = (f"the CIF's {_said(evidence, candidates)}" if evidence
            else f"the CIF gives none of {', '.join(ORIGIN_ITEMS)}")
    plausible = [k for k, c in enumerate(candidates) if c.error is None]
    if not plausible:
        raise ImplausibleInputError(f"CIF {path} leaves the origin choice of {symbol!r} open, and neither gives a "
                                    f"plausible structure: " + "; ".join(f"{c.name}: {c.error}" for c in candidates))
    if len(plausible) == 1:
        other = candidates[1 - plausible[0]]
        return plausible[0], f"as {said}, and {other.name} is implausible: {other.error}"
    for k, taken in enumerate(candidates):
        near = candidates[1 - k]
        if near.contact_ratio < min(1.0, CONTACT_MARGIN * taken.contact_ratio):
            return k, (f"whose atoms do not overlap: {said}, and {near.name} puts atoms too close ({near.closest()}; "
                       f"{taken.closest()})")
    return len(candidates) - 1, (  # origin choice 2, as gemmi reads the CIF
        f"but nothing decides: {said}, and neither choice puts atoms too close, closer than the sum of their "
        "covalent radii and markedly closer than the other choice ("
        + "; ".join(c.closest() for c in candidates)
        + "); origin choice 2 is what gemmi and Dans_Diffraction take: check the origin of the coordinates in the "
        "CIF's source")
