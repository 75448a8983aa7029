"""Comparisons with a peer package that lives in its own environment (see README.md here)."""
