"""``xrd-bluesky bench outage``: scan time with the catalog up, killed mid-scan and down."""

from __future__ import annotations

import os
import time

from xrd_bluesky.sim_devices.beamline import BeamlineConfig


def outage(repeats: int = 2, num: int = 4, detector: str = "Pilatus1M") -> dict:
    """Scan time with the catalog server up, killed mid-scan, and down from the start.

    Each scenario serves a fresh data directory with ``xrd-bluesky serve`` (a child
    process), counts CeO2 ``num`` times at three detector positions with live
    integration, and times the plan; "killed" SIGKILLs the server at the scan's third
    event, "down" before the scan (after the session started). After each outage the
    server is restarted and ``sync`` back-fills the spool; the raw run's event count is
    checked. The reference is bluesky-tiled-plugins' ``TiledWriter`` subscribed directly
    (what the session did before the spool), with the server killed the same way.
    Prints the best time of ``repeats`` per scenario (s) and the ratios to "up".
    """
    import secrets
    import tempfile

    from bluesky_tiled_plugins import TiledWriter

    from xrd_bluesky.cli.session import build_session
    from xrd_bluesky.plans import multi_position_count
    from xrd_bluesky.store import open_catalog
    from xrd_bluesky.store.server import API_KEY_VARIABLE
    from xrd_bluesky.store.sync import sync

    from .testing import ServerProcess

    key = os.environ.setdefault(API_KEY_VARIABLE, secrets.token_hex(16))
    positions = [(0, 0, 300), (20, -15, 300), (-20, 15, 300)]

    def scan(scenario: str, reference: bool = False) -> float:
        with tempfile.TemporaryDirectory(prefix="xrd-bluesky-outage-") as tmp:
            server = ServerProcess(tmp, key)
            session = build_session(directory=tmp, uri=server.uri, config=BeamlineConfig(detector=detector, seed=7))
            bl = session.beamline
            bl.sample_changer.slot.put("CeO2")
            RE = session.RE
            if reference:
                RE.unsubscribe(0)  # the spooling raw writer, subscribed first
                RE.subscribe(TiledWriter(session.catalog.raw))
            events: list[str] = []

            def kill_at_third_event(name, doc):
                if name == "event":
                    events.append(doc["uid"])
                    if scenario == "killed" and len(events) == 3:
                        server.kill()

            RE.subscribe(kill_at_third_event)
            if scenario == "down":
                server.kill()
            t0 = time.perf_counter()
            try:
                uid, = RE(multi_position_count([bl.detector, bl.i0, bl.it], bl.stage, positions, num=num,
                                               shutter=bl.source.shutter, energy=bl.source.energy,
                                               sample=bl.sample_changer.sample().metadata()))
            except Exception as exc:  # the reference writer takes the scan down
                print(f"  reference TiledWriter, server {scenario}: scan aborted after "
                      f"{time.perf_counter() - t0:.1f} s ({type(exc).__name__})")
                return time.perf_counter() - t0
            elapsed = time.perf_counter() - t0
            session.close()
            if scenario != "up":
                with ServerProcess(tmp, key) as restarted:
                    catalog = open_catalog(restarted.uri, directory=tmp)
                    sync(catalog, catalog.spool_dir)
                    n = len(catalog.raw[uid]["primary"].read()["I0_counts"])
                    catalog.close()
                assert n == 3 * num, f"sync back-filled {n} of {3 * num} events"
            else:
                server.kill()
            return elapsed

    out: dict[str, float] = {}
    for scenario in ("up", "killed", "down"):
        out[f"scan_{scenario}_s"] = min(scan(scenario) for _ in range(repeats))
    out["ratio_killed_to_up"] = out["scan_killed_s"] / out["scan_up_s"]
    out["ratio_down_to_up"] = out["scan_down_s"] / out["scan_up_s"]
    out["reference_up_s"] = scan("up", reference=True)
    out["reference_killed_s"] = scan("killed", reference=True)
    for name, value in out.items():
        print(f"{name}: {value:.4g}")
    return out
