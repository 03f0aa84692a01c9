"""Reduction of frames: corrections, the integration kernel, stitching, absolute scale, input
checks, peaks and strain."""
