"""The releases of a library that a compatibility module was written and tested for,
checked when the module is imported."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

from ..errors import XRDBlueskyError


class UnsupportedReleaseError(XRDBlueskyError, RuntimeError):
    """The installed release of a library is outside the range a compatibility module
    of :mod:`xrd_bluesky.compat` was tested with (its private internals may differ): the
    library, the installed release and what to check are named."""


def release_tuple(release: str) -> tuple[int, ...]:
    """The leading numeric components of a release string (``"0.2.20"`` -> ``(0, 2, 20)``,
    ``"0.3.0a1"`` -> ``(0, 3, 0)``); ``()`` when it begins with none."""
    match = re.match(r"\d+(?:\.\d+)*", release)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


@dataclass(frozen=True)
class ReleaseRange:
    """The releases of ``distribution`` that a compatibility module was tested with.

    Attributes
    ----------
    distribution : str
        The library's distribution name, as pip and ``pyproject.toml`` name it.
    minimum : str
        The oldest release supported (inclusive).
    below : str
        The first release not yet checked (exclusive): the next minor (or major)
        release after the newest one tested.
    module : str
        The compatibility module (``xrd_bluesky.compat.tiled``...).
    internals : str
        What the module relies on, to check in a new release before widening the range.
    """

    distribution: str
    minimum: str
    below: str
    module: str
    internals: str

    @property
    def specifier(self) -> str:
        """The range as a requirement specifier (``>=0.2,<0.3``), as ``pyproject.toml`` has it."""
        return f">={self.minimum},<{self.below}"

    def contains(self, release: str) -> bool:
        """Whether ``release`` is in the range (pre-releases of ``below`` are not)."""
        number = release_tuple(release)
        return bool(number) and release_tuple(self.minimum) <= number < release_tuple(self.below)

    def check(self) -> str:
        """The installed release of the library, after checking that it is in the range.

        Raises
        ------
        UnsupportedReleaseError
            The installed release is outside the range, or the library's metadata is
            missing: the library, the release, the module and its internals are named.
        """
        try:
            installed = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            installed = "(no package metadata)"
        if not self.contains(installed):
            raise UnsupportedReleaseError(
                f"{self.module} relies on internals of {self.distribution} {self.specifier} ({self.internals}), "
                f"but {self.distribution} {installed} is installed: install a release in that range "
                f"(pip install '{self.distribution}{self.specifier}'), or check those internals in {installed}, "
                f"update {self.module} and widen its range there and in pyproject.toml")
        return installed
