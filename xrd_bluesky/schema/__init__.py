"""The contracts between the parts of the package: what a run's documents must carry
and what an analysis takes from the beamline description.

- :mod:`.documents`: reading keys of Bluesky documents with errors that name the
  document and the key; run uids checked before they become names.
- :mod:`.run_setup`: :class:`InstrumentSettings` and :class:`RunSetup`, a run as the
  router hands it to an analysis.
- :mod:`.start`: the start-document contract of each raw run ``purpose`` (key names,
  types, units), the builder the plans use and the validators of the analyses.
- :mod:`.calibration`, :mod:`.gain_map`, :mod:`.integration`, :mod:`.peak_fits`,
  :mod:`.pdf`: per analysis, its derived streams and keys and its parameters
  (``as_dict``/``from_dict``), shared by the analysis that records them and every
  reader (replays, catalog lookups).
"""

from .run_setup import InstrumentSettings, RunSetup

__all__ = ["InstrumentSettings", "RunSetup"]
