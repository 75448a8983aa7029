"""Rebuild leaderboard_data/published_results.csv and schema.json from the curated source file.

The one way to rebuild the published table: ``python -m leaderboard_data.build_published [--source PATH]
[--check]`` from the repository root. ``--check`` exits 1 when the committed files differ from what the source
produces (for CI). The source is $RL_CORE_PUBLISHED_SOURCE, else ``shared/leaderboard_sources/
published_results.csv`` in or above the repository. The curation rules of that one file (metric names and
scales, probes, benchmarks, citations) live here, not in rl_core; model families come from
``model_aliases.csv`` (every model name of the source must be listed there).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from rl_core.leaderboard import COLUMNS, LeaderboardError, read_aliases, validate, write_published

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
_SOURCE_RELATIVE = Path("shared") / "leaderboard_sources" / "published_results.csv"

_METRICS: dict[str, tuple[str, float, str]] = {
    # source metric -> (metric, scale divisor, note)
    "Probe accuracy (linear probe)": ("accuracy", 1.0, ""),
    "Probe mAP (linear probe)": ("mAP", 1.0, ""),
    "Probe mAP": ("mAP", 1.0, ""),
    "R-AUC": ("R-AUC", 1.0, ""),
    "R-AUC (retrieval ROC-AUC)": ("R-AUC", 1.0, ""),
    "R-AUC (cross-AUC where available)": ("R-AUC", 1.0, "cross-AUC where available"),
    "R-AUC* (cross-year)": ("R-AUC (cross-year)", 1.0, ""),
    "NMI": ("NMI", 1.0, ""),
    "C-NMI": ("NMI", 1.0, ""),
    "C-NMI (clustering NMI)": ("NMI", 1.0, ""),
    "AUROC (%)": ("AUROC", 100.0, ""),
    "cmAP (%)": ("cmAP", 100.0, ""),
    "Top-1 accuracy (%)": ("accuracy", 100.0, ""),
    "cmAP": ("cmAP", 1.0, ""),
    "AUROC": ("AUROC", 1.0, ""),
    "T1-Acc": ("T1-Acc", 1.0, ""),
    "BEANS avg metric (acc for cls, mAP for det; averaged)": ("BEANS avg (acc/mAP)", 1.0, ""),
    "BEANS avg metric": ("BEANS avg (acc/mAP)", 1.0, ""),
}

_TABLE_SOURCES: dict[str, tuple[str, str, str]] = {
    # table prefix -> (citation, link, date)
    "ESP_WhatMatters": (
        "Miron et al., What Matters for Bioacoustic Encoding (arXiv:2508.11845, ICLR 2026)",
        "https://github.com/earthspecies/avex/tree/b2db7b7/latex_arxiv", "2025-11-20"),
    "ESP_avex_BirdSet_DT_vs_LT": (
        "earthspecies/avex supplementary file (publication status unverified)",
        "https://github.com/earthspecies/avex/tree/b2db7b7/latex_arxiv", "2025-11-20"),
    "Schwinger2025_Review": (
        "Schwinger et al., Foundation Models for Bioacoustics - a Comparative Review (arXiv:2508.01277)",
        "https://github.com/DBD-research-group/BioFoundation/tree/25775ff/projects/biofoundation/results/latex",
        "2025-08"),
    "BirdSet_HF_Leaderboard": (
        "Rauch et al., BirdSet (arXiv:2403.10380), official leaderboard result files", "", ""),
    "AVES_README": ("earthspecies/aves README, BirdAVES table", "https://github.com/earthspecies/aves", ""),
}


def _table_source(table: str) -> tuple[str, str, str]:
    for prefix, info in _TABLE_SOURCES.items():
        if table.startswith(prefix):
            return info
    raise LeaderboardError(f"published source table '{table}' has no citation rule; add it to _TABLE_SOURCES")


def _benchmark_and_task(benchmark: str, dataset: str) -> tuple[str, str]:
    if benchmark.startswith("BEANS"):
        if "Detection" in benchmark or dataset in {"enabirds", "rfcx", "hiceas", "hainan-gibbons", "dcase"}:
            return "BEANS", "detection"
        if benchmark == "BEANS":
            return "BEANS", "classification and detection"
        return "BEANS", "classification"
    if benchmark == "BirdSet":
        return "BirdSet", "multi-label classification"
    if benchmark == "Individual ID":
        return "Individual ID", "individual identification"
    if benchmark == "Vocal Repertoire":
        return "Vocal Repertoire", "repertoire discovery"
    raise LeaderboardError(f"published benchmark '{benchmark}' has no task rule")


def _dataset_name(dataset: str) -> tuple[str, str]:
    """Normalise aggregate names to mean(...); returns (dataset, note)."""
    mapping = {
        "BEANS score (mean of 5)": "mean(5 datasets)",
        "BirdSet score (mean of 7 test sets, excl. POW)": "mean(7 test sets, excl. POW)",
        "avg (over 7 test sets)": "mean(7 test sets)",
        "avg (all datasets)": "mean(all datasets)",
        "avg (birds: cbi,dcase,enabirds,rfcx)": "mean(birds: cbi,dcase,enabirds,rfcx)",
    }
    if dataset in mapping:
        return mapping[dataset], ""
    if dataset == "POW (validation)":
        return "POW", "POW is the validation set in this source"
    return dataset, ""


def _model_and_probe(table: str, model: str) -> tuple[str, str, str]:
    """Split bracketed suffixes of the source's model names into (model, probe, note)."""
    match = re.fullmatch(r"(.*?)\s*\[(.*)\]", model)
    base, inside = (match.group(1), match.group(2)) if match else (model, "")
    if table.startswith("Schwinger"):
        probe = "attentive" if inside.startswith("attentive") else "linear"
        if "restricted" in inside:
            return f"{base} (restricted)", probe, "train-overlap classes removed"
        return base, probe, ""
    if table.startswith("BirdSet_HF"):
        return base, "fine-tuned", inside  # e.g. "train: XCL"
    if table.startswith("AVES_README"):
        return model, "not stated", "BEANS protocol of the AVES paper; probe type not stated in the table"
    return model, "linear", ""  # ESP tables: linear probe on frozen embeddings


def default_source_csv() -> Path:
    """$RL_CORE_PUBLISHED_SOURCE, else shared/leaderboard_sources/published_results.csv in or above the repo."""
    env = os.environ.get("RL_CORE_PUBLISHED_SOURCE")
    if env:
        return Path(env)
    for folder in (REPO_ROOT, *REPO_ROOT.parents):
        if (folder / _SOURCE_RELATIVE).is_file():
            return folder / _SOURCE_RELATIVE
    return REPO_ROOT.parent / _SOURCE_RELATIVE


def build_published_table(source_csv: str | Path | None = None) -> pd.DataFrame:
    """Tidy the curated published-results CSV into the leaderboard schema.

    Rows whose value is not a number in the source ("-", "N/A": not reported) are left out and logged; every
    kept row records its 1-based data-row number in ``source_row``. No value is computed or invented: only
    percentages are divided by 100.
    """
    path = Path(source_csv) if source_csv else default_source_csv()
    if not path.is_file():
        raise LeaderboardError(f"published results source not found: {path}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = ["table", "model", "benchmark", "dataset", "metric", "value", "source"]
    if list(raw.columns) != expected:
        raise LeaderboardError(f"{path}: expected columns {expected}, got {list(raw.columns)}")
    families = dict(zip(*read_aliases(HERE)[["name", "family"]].T.to_numpy()))
    rows, skipped = [], 0
    for index, rec in enumerate(raw.to_dict("records"), start=1):
        try:
            number = float(rec["value"])
        except ValueError:
            skipped += 1
            continue
        if rec["metric"] not in _METRICS:
            raise LeaderboardError(f"{path}: row {index}: unknown metric '{rec['metric']}'")
        metric, divisor, metric_note = _METRICS[rec["metric"]]
        model, probe, model_note = _model_and_probe(rec["table"], rec["model"])
        if model not in families:
            raise LeaderboardError(f"{path}: row {index}: model '{model}' is not in model_aliases.csv; "
                                   "add it there with its canonical name and family")
        benchmark, task = _benchmark_and_task(rec["benchmark"], rec["dataset"])
        dataset, dataset_note = _dataset_name(rec["dataset"])
        citation, link, date = _table_source(rec["table"])
        if rec["source"].startswith("http"):
            link = rec["source"].split(" ")[0]
        if metric in {"R-AUC", "R-AUC (cross-year)", "NMI"} and rec["table"].startswith("ESP"):
            probe = "none"  # retrieval and clustering use the embeddings directly
        notes = "; ".join(n for n in (f"table={rec['table']}", model_note, dataset_note, metric_note) if n)
        rows.append({
            "model": model, "family": families[model], "benchmark": benchmark, "dataset": dataset,
            "task": task, "metric": metric, "probe": probe, "value": round(number / divisor, 6),
            "kind": "published", "source": f"{citation}; {rec['source']}", "source_link": link,
            "source_row": index, "parameters": np.nan, "random_weights": False, "date": date, "notes": notes,
            "checkpoint_sha256": "", "rl_core_version": "", "git_commit": "", "hardware": "", "seed": -1,
            "protocol": "", "wall_time_s": np.nan,
        })
    log.info("published results: %d numbers kept, %d source cells without a number left out", len(rows), skipped)
    return validate(pd.DataFrame(rows, columns=COLUMNS), str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="published_results.csv of leaderboard_sources")
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    try:
        table = build_published_table(args.source or default_source_csv())
    except LeaderboardError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write_published(table, tmp)
            same = all((Path(tmp) / n).read_bytes() == (HERE / n).read_bytes()
                       for n in ("published_results.csv", "schema.json"))
        sys.stdout.write("up to date\n" if same else "published_results.csv is stale: rerun build_published\n")
        return 0 if same else 1
    path = write_published(table, HERE)
    sys.stdout.write(f"wrote {len(table)} rows to {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
