"""The contracts between the parts of the package: what a run's documents must carry
and what an analysis takes from the beamline description.

- :mod:`.documents`: reading keys of Bluesky documents with errors that name the
  document and the key; run uids checked before they become names.
- :mod:`.run_setup`: :class:`InstrumentSettings` and :class:`RunSetup`, a run as the
  router hands it to an analysis.
"""

from .run_setup import InstrumentSettings, RunSetup

__all__ = ["InstrumentSettings", "RunSetup"]
