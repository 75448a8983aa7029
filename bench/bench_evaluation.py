"""Evaluation performance on the real bundled benchmarks with BirdNET: embedding-cache miss vs hit, probe
training time per probe type, peak memory. Prints a Markdown section for bench/RESULTS.md.

Usage (from the repository root): python -m bench.bench_evaluation [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rl_core import ProbeConfig
from rl_core.evaluation.embedding_cache import EmbeddingCache, embed_dataset
from rl_core.evaluation.runner import BUNDLED_BENCHMARKS, checkpoint_sha256
from rl_core.evaluation.training import TrainingConfig, fit_probe, validation_split
from rl_core.probes import build_probe_from_config_offline

MODEL = "birdnet_v2_4"


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="probe fits per probe type")
    args = parser.parse_args()
    from rl_core.cache import get_model

    t0 = time.perf_counter()
    model = get_model(MODEL)
    load_s = time.perf_counter() - t0
    sha = checkpoint_sha256(MODEL)
    rss_after_load = peak_rss_mb()
    lines = [f"Model load: {load_s:.2f} s; peak RSS after load {rss_after_load:.0f} MB", "",
             "| benchmark | clips | audio s | cache miss (embed) s | cache hit s | speed-up | cache size |",
             "|---|---|---|---|---|---|---|"]
    embeddings = {}
    for name, spec in BUNDLED_BENCHMARKS.items():
        with tempfile.TemporaryDirectory() as tmp:  # a fresh cache per benchmark: every clip is a miss first
            ds = spec.load()
            audio_s = sum((c.end_s - c.start_s) if c.start_s is not None else
                          sf.info(c.path).duration for c in ds.clips)
            miss = EmbeddingCache(tmp, MODEL, sha, ["last_layer"], "mean", model.sample_rate, model.window_samples, model.resampling)
            t = time.perf_counter()
            emb = embed_dataset(model, ds, miss, progress=False)
            miss_s = time.perf_counter() - t
            hit = EmbeddingCache(tmp, MODEL, sha, ["last_layer"], "mean", model.sample_rate, model.window_samples, model.resampling)
            t = time.perf_counter()
            again = embed_dataset(model, ds, hit, progress=False)
            hit_s = time.perf_counter() - t
            assert hit.stats.hits == len(ds) and np.array_equal(emb, again)
            size_kb = sum(p.stat().st_size for p in Path(hit.folder).rglob("*.npy")) / 1024
            lines.append(f"| {name} | {len(ds)} | {audio_s:.1f} | {miss_s:.2f} | {hit_s:.3f} | "
                         f"{miss_s / max(hit_s, 1e-9):.0f}x | {size_kb:.0f} KiB |")
            embeddings[name] = (emb, ds.targets(), len(ds.classes))
    rss_after_embed = peak_rss_mb()
    lines += ["", f"Peak RSS after embedding both benchmarks: {rss_after_embed:.0f} MB", "",
              "Probe training on the cached 1024-d BirdNET embeddings of `multi_taxon` (53 clips, 4 classes; "
              "one fit = 80 % of the clips, early stopping on 20 % of them, at most 100 epochs, patience 10):", "",
              "| probe | median fit s | epochs run |", "|---|---|---|"]
    x, y, n_classes = embeddings["multi_taxon"]
    train_idx, val_idx = validation_split(y, 0.2, 0)
    for probe_type in ("linear", "mlp", "attention", "lstm", "transformer"):
        times, epochs = [], []
        for seed in range(args.repeats):
            cfg = ProbeConfig(probe_type=probe_type, hidden_dims=[256], num_heads=4, attention_dim=128)
            head = build_probe_from_config_offline(cfg, x.shape[1], n_classes)
            fit = fit_probe(head, x[train_idx], y[train_idx], x[val_idx], y[val_idx], TrainingConfig(seed=seed),
                            progress=False)
            times.append(fit.seconds)
            epochs.append(fit.epochs_run)
        lines.append(f"| {probe_type} | {statistics.median(times):.2f} | {int(statistics.median(epochs))} |")
    lines += ["", f"Peak RSS after all probe fits (whole process, ru_maxrss): {peak_rss_mb():.0f} MB (torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads)"]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
