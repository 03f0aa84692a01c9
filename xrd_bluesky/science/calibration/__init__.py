"""Geometry calibration: ring extraction and refinement, calibrant checks, detector-position models (stage, arm)."""
