"""Datasets, embedding cache, probe training, metrics and the benchmark runner (see docs/evaluation.md)."""
