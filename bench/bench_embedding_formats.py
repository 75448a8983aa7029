"""Where a project keeps its window embeddings: DuckDB's own column, Parquet (float32 / float16) or Lance, measured.

    .venv/bin/python -m bench.bench_embedding_formats [--windows 20000] [--commits 1000]

Real BirdNET V2.4 embeddings of the bundled great-tit and storm-petrel songs (1-s hop), jittered to ``--windows``
rows, are committed in ``--commits`` batches as an archive project commits its files. Printed per format: bytes per
window on disk, seconds to write every batch, seconds to read everything back as one float32 matrix, and how often
the top-10 cosine neighbours equal float32's. Lance is optional (``pip install pylance``; not a project
dependency): the row is skipped with the reason when it is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._recordings import song_tile

DIM = 1024


def real_embeddings(windows: int) -> np.ndarray:
    """BirdNET embeddings of 60 s of real song, repeated with 2% noise to ``windows`` rows (float32)."""
    from rl_core.cache import get_model
    from rl_core.inference import analyse_recording

    model = get_model("birdnet_v2_4", device="cpu")
    audio = np.resize(song_tile(48000), 60 * 48000).astype(np.float32)
    base = analyse_recording(model, audio, sample_rate=48000, hop_s=1.0, want_scores=False,
                             want_embeddings=True).embeddings
    rng = np.random.default_rng(0)
    rows = base[rng.integers(0, len(base), windows)]
    return (rows + rng.standard_normal(rows.shape).astype(np.float32) * 0.02 * rows.std()).astype(np.float32)


def arrow_batch(vectors: np.ndarray, first: int, dtype) -> pa.Table:
    flat = pa.array(vectors.astype(dtype).reshape(-1))
    return pa.table({"window_index": pa.array(np.arange(first, first + len(vectors), dtype=np.int64)),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM)})


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_duckdb(batches: list[np.ndarray], folder: Path) -> None:
    import duckdb

    con = duckdb.connect(str(folder / "e.duckdb"))
    con.execute(f"create table e (window_index bigint, embedding float[{DIM}])")
    first = 0
    for batch in batches:
        con.register("b", arrow_batch(batch, first, np.float32))
        con.execute("begin; insert into e select * from b; commit")
        con.unregister("b")
        first += len(batch)
    con.close()


def read_duckdb(folder: Path) -> np.ndarray:
    import duckdb

    con = duckdb.connect(str(folder / "e.duckdb"), read_only=True)
    table = con.sql("select embedding from e order by window_index").to_arrow_table()
    con.close()
    return table.column(0).combine_chunks().flatten().to_numpy().reshape(-1, DIM)


def parquet_writer(dtype):
    def write(batches: list[np.ndarray], folder: Path) -> None:
        first = 0
        for i, batch in enumerate(batches):
            pq.write_table(arrow_batch(batch, first, dtype), folder / f"part-{i:05d}.parquet", compression="zstd")
            first += len(batch)
    return write


def read_parquet(folder: Path) -> np.ndarray:
    table = pq.read_table(folder, columns=["embedding"])
    return table.column(0).combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, DIM)


def write_lance(batches: list[np.ndarray], folder: Path) -> None:
    import lance

    first = 0
    for batch in batches:
        lance.write_dataset(arrow_batch(batch, first, np.float16), folder / "e.lance",
                            mode="append" if first else "create")
        first += len(batch)


def read_lance(folder: Path) -> np.ndarray:
    import lance

    table = lance.dataset(folder / "e.lance").to_table(columns=["embedding"])
    return table.column(0).combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, DIM)


def neighbours_kept(reference: np.ndarray, stored: np.ndarray, queries: int = 200, k: int = 10) -> float:
    """Share of the top-``k`` cosine neighbours of ``queries`` rows that the stored copy keeps."""
    def top(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = x[:queries] @ x.T
        np.fill_diagonal(sims[:, :queries], -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]
    a, b = top(reference), top(stored)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(a))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=1_000)
    args = parser.parse_args()
    vectors = real_embeddings(args.windows)
    batches = np.array_split(vectors, args.commits)
    print(f"{args.windows} real BirdNET embeddings (1024-d) in {args.commits} commits; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    formats = [("DuckDB FLOAT[1024] column", write_duckdb, read_duckdb),
               ("Parquet float32 + zstd, a part per commit", parquet_writer(np.float32), read_parquet),
               ("Parquet float16 + zstd, a part per commit (rl_core)", parquet_writer(np.float16), read_parquet),
               ("Lance float16, an append per commit", write_lance, read_lance)]
    print("| format | bytes per window | write s | read all s | top-10 neighbours kept |")
    print("|---|---|---|---|---|")
    for name, write, read in formats:
        folder = Path(tempfile.mkdtemp(prefix="emb_format_"))
        try:
            started = time.perf_counter()
            write(batches, folder)
            written = time.perf_counter() - started
            started = time.perf_counter()
            back = read(folder)
            read_s = time.perf_counter() - started
            size = folder_bytes(folder) / args.windows
            print(f"| {name} | {size:,.0f} | {written:.1f} | {read_s:.2f} | {neighbours_kept(vectors, back):.1%} |")
        except ImportError as err:
            print(f"| {name} | skipped: {err} (pip install pylance) | | | |")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
