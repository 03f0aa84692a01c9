"""Pair distribution functions from powder patterns."""
