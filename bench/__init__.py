"""Benchmarks and checks that print figures (not tests). Run each as a module from the repository root, e.g.
``python -m bench.bench_app``; record the figures in bench/RESULTS.md."""
