"""Image files read through fabio (TIFF, EDF, CBF, MAR...): the checks fabio does not
make, and the header values that matter to the input checks. The frames are read by
:mod:`.reader`.

fabio reports some corrupt files only in its log (a truncated TIFF gives ``data =
None``, a CBF with a bad checksum gives data anyway), loops for ever on a CBF without
its binary section, and decodes a compressed TIFF strip cut short into garbage.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CorruptFrameError

#: Start of the binary section of a CBF file (fabio's ``CbfImage.STARTER``).
_CBF_BINARY_START = b"\x0c\x1a\x04\xd5"

#: First bytes of a TIFF file (little- and big-endian).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")

#: Exposure time in a header: mini-CBF (``# Exposure_time 1.0 s``), EDF and others.
_EXPOSURE_KEYS = ("Exposure_time", "ExposureTime", "exposure_time", "count_time", "acq_expo_time", "Exposure")

#: Count cut-off of a Pilatus/Eiger mini-CBF header (``# Count_cutoff 1048574 counts``).
_CUTOFF = re.compile(r"Count_cutoff\s+([0-9.eE+]+)")


def check_complete(path: Path) -> None:
    """Refuse, before fabio reads it, a CBF file without its binary section and a TIFF
    file with a strip of image data that ends beyond the end of the file.

    Raises
    ------
    CorruptFrameError
        Naming the file and what is cut short.
    """
    if path.suffix.lower() == ".cbf" and _CBF_BINARY_START not in path.read_bytes():
        # fabio loops for ever looking for the binary section of such a file
        raise CorruptFrameError(f"cannot read frame file {path} (truncated or corrupt): no CBF binary section")
    with open(path, "rb") as f:
        is_tiff = f.read(4) in _TIFF_MAGIC
    truncation = _tiff_truncation(path) if is_tiff else None
    if truncation:
        raise CorruptFrameError(f"cannot read frame file {path} (truncated TIFF): {truncation}")


def _tiff_truncation(path: Path) -> str | None:
    """Why the TIFF file ``path`` is truncated — a strip of image data that ends beyond
    the end of the file — or None.

    fabio reads a compressed TIFF through PIL/libtiff, which decode a strip cut short
    into an image padded with garbage and say so only on the C library's stderr."""
    from fabio import TiffIO

    size = path.stat().st_size
    try:
        with TiffIO.TiffIO(str(path)) as tiff:
            infos = [tiff.getInfo(i) for i in range(tiff.getNumberOfImages())]
    except struct.error as exc:  # TiffIO ran off the end of the file
        return f"an image file directory is cut short ({exc})"
    except Exception:  # layouts TiffIO cannot parse (tiled TIFF): PIL itself refuses those cut short
        return None
    for i, info in enumerate(infos):
        for j, (offset, count) in enumerate(zip(info["stripOffsets"], info["stripByteCounts"])):
            if offset + count > size:
                return f"strip {j} of image {i} ends at byte {offset + count}, the file has {size} bytes"
    return None


@contextmanager
def fabio_errors() -> Iterator[list[str]]:
    """Collect the messages fabio logs at ERROR level while the block runs (see the
    module docstring)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.ERROR)
    logger = logging.getLogger("fabio")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def header_values(header: dict) -> tuple[float | None, float | None]:
    """The exposure time per frame (s) and the count cut-off (counts) that a fabio
    ``header`` gives (its mini-CBF lines included), each None when it does not say."""
    cbf = _mini_cbf(header)
    cutoff = _CUTOFF.search(str(header.get("_array_data.header_contents", "")))
    return _header_number({**header, **cbf}, _EXPOSURE_KEYS), float(cutoff.group(1)) if cutoff else None


def _header_number(header: dict, keys: tuple[str, ...]) -> float | None:
    """The first of ``keys`` in ``header`` whose value starts with a positive number."""
    for key in keys:
        match = re.match(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)", str(header.get(key, "")))
        if match:
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            if value > 0:
                return value
    return None


def _mini_cbf(header: dict) -> dict:
    """The ``# Key value`` lines of a mini-CBF header (Pilatus/Eiger) as a dict."""
    text = str(header.get("_array_data.header_contents", ""))
    lines = (line.lstrip("# ").split(None, 1) for line in text.splitlines())
    return {parts[0]: parts[1] for parts in lines if len(parts) == 2}
