"""Crystal structures from CIF files, read and expanded with gemmi, and checked for plausibility.

gemmi (CCP4 / Global Phasing) parses the small-molecule CIF and supplies the space
group and its symmetry operations; every site of the asymmetric unit is expanded to
the full unit cell with those operations, images closer than :data:`SITE_TOLERANCE_A`
(periodic) being one atom. The result is our :class:`~xrd_bluesky.science.crystal.Crystal`
(whose |F|^2 uses xraylib's form factors) with the space group, the formula unit, Z and
the density of the cell content.

Isotropic displacement parameters (``_atom_site_U_iso_or_equiv`` or ``B_iso``) are kept as
B = 8 pi^2 U (A^2); a CIF without them gives B = 0 (static lattice). Anisotropic
parameters are not used. Sites must be fully occupied: :class:`Crystal` has no
occupancy.

Never a silent wrong result: :func:`read_cif` refuses with an
:class:`~xrd_bluesky.errors.ImplausibleInputError` (naming the CIF, the key or site, the
value and the plausible range) cell lengths outside :data:`CELL_LENGTH_RANGE_A`, angles
outside :data:`CELL_ANGLE_RANGE_DEG` (radians?) or making no cell or one thinner than
:data:`MIN_CELL_HEIGHT_A`, a U_iso or B_iso below -:data:`U_ISO_ROUNDING_A2`, two atoms of
the cell closer than :data:`MIN_DISTANCE_A` (a site listed twice, a site off its special
position, another origin choice) and a density outside :data:`DENSITY_RANGE_G_CM3`; it warns
(:class:`~xrd_bluesky.errors.PlausibilityWarning`) of a U_iso above :data:`U_ISO_WARNED_A2`.

CIFs bundled with the package (``xrd_bluesky/data/cif``) are found by name, e.g. ``"Si"``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np
import xraylib

from ..errors import ImplausibleInputError, PlausibilityWarning, SampleError
from .crystal import Atom, Crystal

#: Avogadro constant (1/mol, exact in SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: Largest |occupancy - 1| accepted for a site.
OCCUPANCY_TOLERANCE = 1e-3

#: Two positions closer than this (A, periodic) are one: the images of a site are one atom,
#: and two sites there are a site listed twice. Coordinates given to 4 decimals put a site
#: meant to be on a special position within 0.005 A of it even on a 30 A axis; the
#: shortest bond (X-H, 0.8-1.0 A by X-rays) is 80 times longer.
SITE_TOLERANCE_A = 0.01
#: Two atoms of the cell closer than this (A, periodic) are refused: the shortest distances
#: in solids are X-H bonds, 0.8-1.0 A as seen by X-rays (H2: 0.74 A).
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


@dataclass(frozen=True)
class CrystalStructure:
    """A crystal structure read from a CIF.

    Attributes
    ----------
    crystal : Crystal
        Lattice (A, deg) and every atom of the unit cell.
    space_group : gemmi.SpaceGroup
        The space group, in the setting of the CIF.
    formula : str
        Formula unit, elements in the order of the CIF's sites, e.g. ``"LiNbO3"``.
    formula_units : int
        Formula units per cell, Z.
    density_g_cm3 : float
        Density of the cell content, Z * formula mass / (N_A * V) (g/cm^3).
    source : str
        The CIF the structure was read from.
    """

    crystal: Crystal
    space_group: gemmi.SpaceGroup
    formula: str
    formula_units: int
    density_g_cm3: float
    source: str

    @property
    def name(self) -> str:
        """The crystal's name (the CIF data block)."""
        return self.crystal.name


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

    Raises
    ------
    SampleError
        If the file cannot be parsed, misses a cell parameter, has no space group, no
        sites, a partly occupied site, a coordinate that is not a number or an element
        xraylib does not know.
    ImplausibleInputError
        If the cell, a displacement parameter, the distance of two atoms or the density
        is implausible (see the module's description).

    Warns
    -----
    PlausibilityWarning
        If a site's U_iso is above :data:`U_ISO_WARNED_A2`.
    """
    path = resolve_cif(name_or_path)
    block = _read_block(path)
    lattice = _checked_lattice(block, path)
    small = _small_structure(block, path)
    space_group = small.spacegroup
    if space_group is None:
        raise SampleError(f"CIF {path} gives no space group (symmetry operations, Hall or H-M symbol)")
    if not small.sites:
        raise SampleError(f"CIF {path} has no atom sites")
    labels, atoms = _unit_cell_atoms(small, space_group, lattice, path)
    _check_distances(labels, atoms, lattice, path)
    crystal = dataclasses.replace(lattice, atoms=tuple(atoms))
    counts = Counter(atom.element for atom in atoms)
    z = reduce(math.gcd, counts.values())
    formula = "".join(el + (str(n // z) if n // z > 1 else "") for el, n in counts.items())
    cell_mass_g = sum(xraylib.AtomicWeight(xraylib.SymbolToAtomicNumber(el)) * n
                      for el, n in counts.items()) / AVOGADRO_PER_MOL
    volume_A3 = cell_volume_A3(crystal)
    density = cell_mass_g / (volume_A3 * 1e-24)
    _check_density(density, formula, z, volume_A3, path)
    return CrystalStructure(crystal, space_group, formula, z, density, str(path))


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


def _unit_cell_atoms(small: gemmi.SmallStructure, space_group: gemmi.SpaceGroup, lattice: Crystal,
                     path: Path) -> tuple[list[str], list[Atom]]:
    """Every atom of the cell, each site's distinct images under all symmetry operations,
    and the label of the site it comes from."""
    rotations, translations = _operations(space_group.hall)
    metric_A2 = lattice.metric()
    shifts = _lattice_shifts(lattice, SITE_TOLERANCE_A)
    labels: list[str] = []
    atoms: list[Atom] = []
    for site in small.sites:
        element = _checked_element(site, path)
        b_iso = _b_iso_A2(site, path)
        images = _distinct(np.mod(rotations @ [site.fract.x, site.fract.y, site.fract.z] + translations, 1.0),
                           metric_A2, shifts)
        labels += [site.label] * len(images)
        atoms += [Atom(element, tuple(float(v) for v in xyz), b_iso) for xyz in images]
    return labels, atoms


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


def _checked_element(site: gemmi.SmallStructure.Site, path: Path) -> str:
    """The element of a fully occupied site with numeric coordinates."""
    if abs(site.occ - 1.0) > OCCUPANCY_TOLERANCE:
        raise SampleError(f"site {site.label} of {path} has occupancy {site.occ}; "
                          "only fully occupied sites are supported")
    fract = (site.fract.x, site.fract.y, site.fract.z)
    if not all(math.isfinite(v) for v in fract):
        raise SampleError(f"site {site.label} of {path}: fractional coordinates {fract} are not all numbers")
    element = site.element.name
    try:
        xraylib.SymbolToAtomicNumber(element)
    except ValueError as exc:
        raise SampleError(f"site {site.label} of {path}: element {element!r} unknown to xraylib") from exc
    return element


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


def _check_distances(labels: list[str], atoms: list[Atom], lattice: Crystal, path: Path) -> None:
    """Refuse two atoms of the cell closer than :data:`MIN_DISTANCE_A` (periodic), the same
    position (within :data:`SITE_TOLERANCE_A`) being a site listed twice."""
    fract = np.array([atom.position for atom in atoms])
    i, j, distance_A = _closest_pair(fract, lattice.metric(), _lattice_shifts(lattice, MIN_DISTANCE_A))
    if distance_A >= MIN_DISTANCE_A:
        return
    where = [f"({', '.join(f'{v:.4f}' for v in fract[k])})" for k in (i, j)]
    if distance_A <= SITE_TOLERANCE_A:
        raise ImplausibleInputError(f"sites {labels[i]} and {labels[j]} of CIF {path} put an atom at the same "
                                    f"position {where[0]} (within {SITE_TOLERANCE_A} A): a site listed twice?")
    raise ImplausibleInputError(
        f"atoms of sites {labels[i]} at {where[0]} and {labels[j]} at {where[1]} of CIF {path} are "
        f"{distance_A:.3f} A apart, closer than {MIN_DISTANCE_A} A (X-H bonds are 0.8-1.0 A): a site listed "
        "twice with other coordinates, a site off its special position, or coordinates of another origin choice?")


def _closest_pair(fract: np.ndarray, metric_A2: np.ndarray, shifts: np.ndarray) -> tuple[int, int, float]:
    """Indices i < j of the two closest positions (n, 3, fractional) over the lattice
    translations ``shifts``, and their distance (A; infinite for a single position)."""
    n = len(fract)
    rows = max(1, _PAIR_BLOCK // (n * len(shifts)))
    best = (0, 0, math.inf)
    for start in range(0, n - 1, rows):
        block = fract[start:start + rows]
        distance_A = _periodic_distance_A(fract[None, :, :] - block[:, None, :], metric_A2, shifts)
        distance_A[np.arange(n)[None, :] <= np.arange(start, start + len(block))[:, None]] = math.inf
        row, j = divmod(int(np.argmin(distance_A)), n)
        if distance_A[row, j] < best[2]:
            best = (start + row, j, float(distance_A[row, j]))
    return best


def _check_density(density_g_cm3: float, formula: str, z: int, volume_A3: float, path: Path) -> None:
    """Refuse a density outside :data:`DENSITY_RANGE_G_CM3`."""
    low, high = DENSITY_RANGE_G_CM3
    if not low <= density_g_cm3 <= high:
        raise ImplausibleInputError(
            f"CIF {path}: density {density_g_cm3:.4g} g/cm^3 of Z = {z} x {formula} in a cell of {volume_A3:.4g} A^3 "
            f"is outside the plausible range {low:g}-{high:g} g/cm^3 (solid hydrogen 0.086, osmium 22.6): cell "
            "lengths in another unit, or sites missing or repeated?")
