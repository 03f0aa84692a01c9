"""Reading runs while others are written, on the embedded catalog's DuckDB table store.

Tiled shares one DuckDB connection between request threads; without
:mod:`xrd_bluesky.store.table_store` this lost or duplicated appended rows (99 or 101
rows for 100 events), returned empty tables to readers, and once crashed the process
(segfault). The catalog runs in a child process: the test process has its own
embedded server already, and a crash must fail the test, not the session.
"""

import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

EVENTS = 80
RUNS = 2
READ_EVENTS = 50


def _write_run(container, n: int) -> str:
    """A run of ``n`` events, each appended in its own request (batch size 1)."""
    from event_model import compose_run

    from xrd_bluesky.store.writer import tiled_writer

    writer = tiled_writer(container, 1)
    bundle = compose_run(metadata={"purpose": "table store test"})
    writer("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "test", "units": "mm"}})
    writer("descriptor", desc.descriptor_doc)
    for i in range(n):
        writer("event", desc.compose_event(data={"x": float(i)}, timestamps={"x": time.time()}))
    writer("stop", bundle.compose_stop())
    return bundle.start_doc["uid"]


def _hammer() -> None:
    """Write runs while two threads read another one; print what went wrong, exit 1 if anything."""
    from tiled.client import from_uri

    from xrd_bluesky.store.catalog import open_catalog

    with tempfile.TemporaryDirectory() as tmp:
        catalog = open_catalog(directory=tmp)
        problems: list[str] = []
        reads = [0]
        try:
            first = _write_run(catalog.raw, READ_EVENTS)
            done = threading.Event()

            def read() -> None:
                client = from_uri(catalog.uri)
                while not done.is_set():
                    try:
                        x = np.asarray(client["raw"][first]["primary"].read()["x"])
                        if not np.array_equal(x, np.arange(READ_EVENTS, dtype=float)):
                            problems.append(f"read {len(x)} rows of {READ_EVENTS}")
                        reads[0] += 1
                    except Exception as exc:  # any failure of a read is what this test looks for
                        problems.append(f"read failed: {exc!r}"[:300])

            readers = [threading.Thread(target=read) for _ in range(2)]
            for thread in readers:
                thread.start()
            try:
                written = [_write_run(catalog.raw, EVENTS) for _ in range(RUNS)]
            finally:
                done.set()
                for thread in readers:
                    thread.join()
            for uid in written:
                x = np.asarray(catalog.raw[uid]["primary"].read()["x"])
                if not np.array_equal(x, np.arange(EVENTS, dtype=float)):
                    problems.append(f"run written with {EVENTS} events reads back {len(x)} rows")
        finally:
            catalog.close()
    print(f"reads {reads[0]} problems {len(problems)}: {problems[:3]}")
    sys.exit(1 if problems or reads[0] < 10 else 0)


def test_reads_during_writes_neither_fail_nor_change_rows():
    child = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, (child.returncode, child.stdout[-2000:], child.stderr[-3000:])
    assert "problems 0" in child.stdout


if __name__ == "__main__":
    _hammer()
