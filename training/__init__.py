"""Reproduce the bundled model and its evaluation from a folder of labelled slices."""
