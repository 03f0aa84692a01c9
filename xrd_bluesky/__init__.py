"""X-ray diffraction data reduction inside the Bluesky beamline control system.

``from xrd_bluesky import attach`` wires the package onto a profile's RunEngine
(:func:`xrd_bluesky.beamline.attach`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xrd-bluesky")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "attach", "load_beamline"]


def __getattr__(name: str):
    """``attach`` and ``load_beamline`` on first use (importing them loads bluesky,
    tiled and pyFAI, which ``import xrd_bluesky`` alone should not)."""
    if name in ("attach", "load_beamline"):
        from . import beamline

        return getattr(beamline, name)
    raise AttributeError(f"module 'xrd_bluesky' has no attribute {name!r}")
