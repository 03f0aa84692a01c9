"""Crystal structures from CIF files, read and expanded with gemmi.

gemmi (CCP4 / Global Phasing) parses the small-molecule CIF and supplies the space
group and its symmetry operations; every site of the asymmetric unit is expanded to
the full unit cell with those operations, images closer than
:data:`SITE_TOLERANCE` (fractional coordinates, periodic) being one atom. The result is
our :class:`~xrd_bluesky.science.crystal.Crystal` (whose |F|^2 uses xraylib's form
factors) with the space group, the formula unit, Z and the density of the cell content.

Isotropic displacement parameters (``_atom_site_U_iso_or_equiv`` or ``B_iso``) are kept as
B = 8 pi^2 U (A^2); a CIF without them gives B = 0 (static lattice). Anisotropic
parameters are not used. Sites must be fully occupied: :class:`Crystal` has no
occupancy.

CIFs bundled with the package (``xrd_bluesky/data/cif``) are found by name, e.g. ``"Si"``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import reduce
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np
import xraylib

from ..errors import SampleError
from .crystal import Atom, Crystal

#: Two symmetry images of a site closer than this (fractional coordinates) are one atom.
SITE_TOLERANCE = 1e-4
#: Avogadro constant (1/mol, exact in SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: Largest |occupancy - 1| accepted for a site.
OCCUPANCY_TOLERANCE = 1e-3


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
    """Read a CIF (path or bundled name) and expand it to the full unit cell.

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
        If the file cannot be parsed, has no space group, no sites, a partly occupied
        site or an element xraylib does not know.
    """
    path = resolve_cif(name_or_path)
    try:
        small = gemmi.read_small_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise SampleError(f"cannot read CIF {path}: {exc}") from exc
    space_group = small.spacegroup
    if space_group is None:
        raise SampleError(f"CIF {path} gives no space group (symmetry operations, Hall or H-M symbol)")
    if not small.sites:
        raise SampleError(f"CIF {path} has no atom sites")
    atoms = _unit_cell_atoms(small, space_group, path)
    cell = small.cell
    crystal = Crystal(small.name or path.stem, cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma,
                      tuple(atoms))
    counts = Counter(atom.element for atom in atoms)
    z = reduce(math.gcd, counts.values())
    formula = "".join(el + (str(n // z) if n // z > 1 else "") for el, n in counts.items())
    cell_mass_g = sum(xraylib.AtomicWeight(xraylib.SymbolToAtomicNumber(el)) * n
                      for el, n in counts.items()) / AVOGADRO_PER_MOL
    density = cell_mass_g / (cell_volume_A3(crystal) * 1e-24)
    return CrystalStructure(crystal, space_group, formula, z, density, str(path))


def _unit_cell_atoms(small: gemmi.SmallStructure, space_group: gemmi.SpaceGroup, path: Path) -> list[Atom]:
    """Every atom of the cell: each site's images under all symmetry operations."""
    atoms = []
    for site in small.sites:
        if abs(site.occ - 1.0) > OCCUPANCY_TOLERANCE:
            raise SampleError(f"site {site.label} of {path} has occupancy {site.occ}; "
                              "only fully occupied sites are supported")
        element = site.element.name
        try:
            xraylib.SymbolToAtomicNumber(element)
        except ValueError as exc:
            raise SampleError(f"site {site.label} of {path}: element {element!r} unknown to xraylib") from exc
        b_iso = 8.0 * math.pi**2 * site.u_iso
        images: list[np.ndarray] = []
        for op in space_group.operations():
            xyz = np.mod(op.apply_to_xyz([site.fract.x, site.fract.y, site.fract.z]), 1.0)
            if all(np.abs((xyz - other) - np.round(xyz - other)).max() > SITE_TOLERANCE for other in images):
                images.append(xyz)
        atoms += [Atom(element, tuple(float(v) for v in xyz), b_iso) for xyz in images]
    return atoms
