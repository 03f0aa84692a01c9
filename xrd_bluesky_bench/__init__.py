"""Side-by-side benchmarks behind ``xrd-bluesky bench``: our path and the reference path
(plain pyFAI) on the same frames, in one process, both warmed up. Each prints
``name: value`` lines."""
