"""Leaderboard data: published results (with their sources) and results computed here, in one schema.

Two committed files in ``leaderboard_data/`` hold the rows:
  * ``published_results.csv``: built by :func:`build_published_table` from the curated source file
    ``published_results.csv`` of ``shared/leaderboard_sources`` (every row keeps ``source_row``, its row number
    in that file, so each number can be traced back); regenerate with ``leaderboard_data/build_published.py``.
  * ``local_results.csv``: written by the benchmark runner through :func:`append_local_results`, one row per
    number with provenance (checkpoint sha256, rl_core version, git commit, hardware, seed, protocol, wall time).
The app reads them with :func:`load_leaderboard`, never the shared source file.

Values are on a 0-1 scale. Models with random weights are flagged (``random_weights``) and
:func:`rank_models` never ranks them together with trained models.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from rl_core.atomic import atomic_write, write_text_atomic
from rl_core.errors import ConfigError, RLCoreError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "leaderboard_data"
_SOURCE_RELATIVE = Path("shared") / "leaderboard_sources" / "published_results.csv"
PUBLISHED_FILE = "published_results.csv"
LOCAL_FILE = "local_results.csv"

# --------------------------------------------------------------------------- schema
#: column -> (pandas dtype, description). The same columns, in this order, in both files and in the DataFrame.
SCHEMA: dict[str, tuple[str, str]] = {
    "model": ("str", "model name as published (published rows) or registry key (local rows)"),
    "family": ("str", "architecture family: BEATs, EAT, EfficientNet, AVES, BirdMAE, BirdNET, Perch, ..."),
    "benchmark": ("str", "BEANS, BirdSet, Individual ID, Vocal Repertoire, rl_core bundled, ..."),
    "dataset": ("str", "dataset name; aggregate rows say mean(...)"),
    "task": ("str", "classification, detection, multi-label classification, individual identification, ..."),
    "metric": ("str", "accuracy, balanced accuracy, macro F1, mAP, cmAP, AUROC, T1-Acc, R-AUC, P@1, NMI, ARI"),
    "probe": ("str", "linear, attentive, fine-tuned, mlp, none (retrieval/clustering), not stated"),
    "value": ("float64", "the number, on a 0-1 scale (ARI: -1 to 1)"),
    "kind": ("str", "published or local"),
    "source": ("str", "citation text (published) or how the number was computed (local)"),
    "source_link": ("str", "URL of the source, or empty"),
    "source_row": ("int64", "1-based data row of the source CSV (published); -1 for local rows"),
    "parameters": ("float64", "parameter count, NaN when unknown"),
    "random_weights": ("bool", "True when the model's weights are random (never ranked with trained models)"),
    "date": ("str", "publication / commit date (published) or run date (local), ISO format"),
    "notes": ("str", "anything else a reader needs (source table, variant, caveats)"),
    # provenance of local rows (empty for published rows)
    "checkpoint_sha256": ("str", "sha256 of the weights file used (local rows)"),
    "rl_core_version": ("str", "rl_core version that computed the number (local rows)"),
    "git_commit": ("str", "git commit of the project that computed the number (local rows)"),
    "hardware": ("str", "machine description (local rows)"),
    "seed": ("int64", "random seed of the run; -1 when not applicable"),
    "protocol": ("str", "name of the documented protocol (local rows), see docs/benchmarks.md"),
    "wall_time_s": ("float64", "wall time of the whole run in seconds (local rows); NaN for published"),
}
COLUMNS = list(SCHEMA)
KINDS = ("published", "local")
SIGNED_METRICS = ("ARI",)
_REQUIRED_NONEMPTY = ("model", "family", "benchmark", "dataset", "task", "metric", "probe", "kind", "source")


class LeaderboardError(RLCoreError):
    """Leaderboard data does not follow the schema, or cannot be written."""


def schema_json() -> dict[str, Any]:
    """The schema as written to ``leaderboard_data/schema.json``."""
    return {
        "description": "One row per number. Files: published_results.csv, local_results.csv (same columns).",
        "columns": [{"name": n, "dtype": d, "description": text} for n, (d, text) in SCHEMA.items()],
        "kinds": list(KINDS),
        "value_range": [0.0, 1.0],
    }


def validate(df: pd.DataFrame, where: str = "leaderboard") -> pd.DataFrame:
    """Check columns, dtypes and values; return the frame with columns in schema order and exact dtypes.

    Raises :class:`LeaderboardError` naming the first offending column/row.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in SCHEMA]
    if missing or extra:
        raise LeaderboardError(f"{where}: columns differ from the schema (missing {missing}, unknown {extra})")
    out = df[COLUMNS].copy()
    for col, (dtype, _) in SCHEMA.items():
        if dtype == "str":
            out[col] = out[col].fillna("").astype(str)
        elif dtype == "bool":
            values = out[col]
            if values.dtype != bool:
                mapped = values.astype(str).str.strip().str.lower().map({"true": True, "false": False, "1": True, "0": False})
                if mapped.isna().any():
                    bad = int(np.flatnonzero(mapped.isna().to_numpy())[0])
                    raise LeaderboardError(f"{where}: row {bad}: '{col}' must be true/false, got {values.iloc[bad]!r}")
                values = mapped
            out[col] = values.astype(bool)
        else:
            numeric = pd.to_numeric(out[col], errors="coerce")
            bad_mask = numeric.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
            if dtype == "int64":
                bad_mask |= numeric.isna()
            if bad_mask.any():
                bad = int(np.flatnonzero(bad_mask.to_numpy())[0])
                raise LeaderboardError(f"{where}: row {bad}: '{col}' must be a number, got {out[col].iloc[bad]!r}")
            out[col] = numeric.astype(dtype)
    for col in _REQUIRED_NONEMPTY:
        empty = out[col].str.strip() == ""
        if empty.any():
            raise LeaderboardError(f"{where}: row {int(np.flatnonzero(empty.to_numpy())[0])}: '{col}' is empty")
    bad_kind = ~out["kind"].isin(KINDS)
    if bad_kind.any():
        row = int(np.flatnonzero(bad_kind.to_numpy())[0])
        raise LeaderboardError(f"{where}: row {row}: kind must be one of {KINDS}, got {out['kind'].iloc[row]!r}")
    # values are on a 0-1 scale; ARI alone can be negative (worse than chance), down to -1
    lower = np.where(out["metric"].isin(SIGNED_METRICS), -1.0, 0.0)
    out_of_range = out["value"].isna() | (out["value"] < lower) | (out["value"] > 1)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range.to_numpy())[0])
        raise LeaderboardError(f"{where}: row {row}: value must be in [0, 1] ([-1, 1] for ARI), got {out['value'].iloc[row]!r} "
                               f"({out['model'].iloc[row]}, {out['dataset'].iloc[row]}, {out['metric'].iloc[row]})")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- published results
_FAMILY_PATTERNS: list[tuple[str, str]] = [
    # order matters: the first match wins
    (r"birdnet", "BirdNET"),
    (r"surfperch|perch", "Perch"),
    (r"bird-?mae", "BirdMAE"),
    (r"audiomae", "AudioMAE"),
    (r"beats", "BEATs"),
    (r"\beat\b|^eat[- ]|sl-eat|eat-", "EAT"),
    (r"aves", "AVES"),
    (r"effnet|efficientnet", "EfficientNet"),
    (r"convnext", "ConvNeXt"),
    (r"biolingual", "BioLingual"),
    (r"protoclr", "ProtoCLR"),
    (r"vit-ins", "ViT"),
    (r"\bast\b|^ast-", "AST"),
    (r"wav2vec2", "Wav2Vec2"),
]


def model_family(model: str) -> str:
    """Architecture family of a published model name (``Other`` when no rule matches)."""
    lowered = model.lower()
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, lowered):
            return family
    return "Other"


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
        benchmark, task = _benchmark_and_task(rec["benchmark"], rec["dataset"])
        dataset, dataset_note = _dataset_name(rec["dataset"])
        citation, link, date = _table_source(rec["table"])
        if rec["source"].startswith("http"):
            link = rec["source"].split(" ")[0]
        if metric in {"R-AUC", "R-AUC (cross-year)", "NMI"} and rec["table"].startswith("ESP"):
            probe = "none"  # retrieval and clustering use the embeddings directly
        notes = "; ".join(n for n in (f"table={rec['table']}", model_note, dataset_note, metric_note) if n)
        rows.append({
            "model": model, "family": model_family(model), "benchmark": benchmark, "dataset": dataset,
            "task": task, "metric": metric, "probe": probe, "value": round(number / divisor, 6),
            "kind": "published", "source": f"{citation}; {rec['source']}", "source_link": link,
            "source_row": index, "parameters": np.nan, "random_weights": False, "date": date, "notes": notes,
            "checkpoint_sha256": "", "rl_core_version": "", "git_commit": "", "hardware": "", "seed": -1,
            "protocol": "", "wall_time_s": np.nan,
        })
    log.info("published results: %d numbers kept, %d source cells without a number left out", len(rows), skipped)
    return validate(pd.DataFrame(rows, columns=COLUMNS), str(path))


# --------------------------------------------------------------------------- files, atomic writes, locking
def data_dir(path: str | Path | None = None) -> Path:
    """The leaderboard folder: argument > $RL_CORE_LEADERBOARD_DIR > <repo>/leaderboard_data."""
    if path is not None:
        return Path(path)
    env = os.environ.get("RL_CORE_LEADERBOARD_DIR")
    return Path(env) if env else DEFAULT_DATA_DIR


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``path`` (created if missing); blocks until acquired."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV through a temporary file renamed over ``path`` (never half-written)."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        df.to_csv(handle, index=False, lineterminator="\n")
    return Path(path)


def read_results_csv(path: str | Path) -> pd.DataFrame:
    """Read one results file and validate it (an absent file is an empty table)."""
    path = Path(path)
    if not path.is_file():
        return validate(pd.DataFrame(columns=COLUMNS), str(path))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return validate(df, str(path))


def write_published(df: pd.DataFrame | None = None, directory: str | Path | None = None) -> Path:
    """Write the published table and ``schema.json`` into the leaderboard folder."""
    folder = data_dir(directory)
    table = validate(df if df is not None else build_published_table(), "published results")
    write_text_atomic(json.dumps(schema_json(), indent=2) + "\n", folder / "schema.json")
    return write_csv_atomic(table, folder / PUBLISHED_FILE)


def _local_row(row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(row) - set(SCHEMA))
    if unknown:
        raise LeaderboardError(f"local result has unknown field(s) {unknown}; known: {COLUMNS}")
    defaults: dict[str, Any] = {
        "kind": "local", "source_link": "", "source_row": -1, "parameters": np.nan, "random_weights": False,
        "notes": "", "checkpoint_sha256": "", "rl_core_version": "", "git_commit": "", "hardware": "",
        "seed": -1, "protocol": "", "wall_time_s": np.nan, "date": "",
    }
    merged = {**defaults, **row}
    if merged["kind"] != "local":
        raise LeaderboardError("append_local_results only writes rows of kind 'local'")
    missing = [c for c in COLUMNS if c not in merged]
    if missing:
        raise LeaderboardError(f"local result lacks field(s) {missing}")
    return merged


def append_local_results(rows: Iterable[Mapping[str, Any]], directory: str | Path | None = None) -> Path:
    """Append rows to ``local_results.csv`` atomically, under an inter-process lock.

    The new rows are validated before anything is written; the file is rewritten through a temporary file and
    ``os.replace`` while a lock file is held, so concurrent appenders never lose each other's rows and a crash
    never leaves a half-written file.
    """
    new = validate(pd.DataFrame([_local_row(r) for r in rows], columns=COLUMNS), "new local results")
    folder = data_dir(directory)
    target = folder / LOCAL_FILE
    with file_lock(folder / f".{LOCAL_FILE}.lock"):
        existing = read_results_csv(target)
        combined = new if existing.empty else pd.concat([existing, new], ignore_index=True)
        write_csv_atomic(combined, target)
    return target


def fill_parameters_from_registry(df: pd.DataFrame, directory: str | Path | None = None) -> pd.DataFrame:
    """Fill unknown parameter counts from the registry.

    Local results name registry keys directly; published names are matched through
    ``leaderboard_data/model_aliases.csv`` (published name -> registry key, only where the architecture is
    unambiguous). The count is that of rl_core's implementation of the architecture (its YAML's ``parameters``).
    """
    from rl_core.registry import registered_models

    counts = {name: float(entry.parameters) for name, entry in registered_models().items() if entry.parameters}
    aliases_path = data_dir(directory) / "model_aliases.csv"
    if aliases_path.is_file():
        aliases = pd.read_csv(aliases_path, dtype=str, keep_default_na=False)
        for model, key in zip(aliases["model"], aliases["registry_key"]):
            if key in counts:
                counts.setdefault(model, counts[key])
    df = df.copy()
    missing = df["parameters"].isna() & df["model"].isin(counts)
    df.loc[missing, "parameters"] = df.loc[missing, "model"].map(counts).astype("float64")
    return df


def load_leaderboard(data_dir_path: str | Path | None = None) -> pd.DataFrame:
    """Published + local rows in one DataFrame with the schema's columns and dtypes (``value`` float64).

    Unknown parameter counts are filled from the registry (see :func:`fill_parameters_from_registry`).
    """
    folder = data_dir(data_dir_path)
    published = read_results_csv(folder / PUBLISHED_FILE)
    local = read_results_csv(folder / LOCAL_FILE)
    if published.empty and not (folder / PUBLISHED_FILE).is_file():
        log.warning("no %s in %s", PUBLISHED_FILE, folder)
    frames = [f for f in (published, local) if not f.empty]
    if not frames:
        return validate(pd.DataFrame(columns=COLUMNS))
    return fill_parameters_from_registry(validate(pd.concat(frames, ignore_index=True)), folder)


def rank_models(df: pd.DataFrame, benchmark: str, dataset: str, metric: str) -> pd.DataFrame:
    """Rank rows of one (benchmark, dataset, metric), best first.

    Trained and random-weight models are ranked separately (``rank_group`` says which); a random-weight model
    never receives a rank among trained ones.
    """
    if metric not in set(df["metric"]):
        raise ConfigError(f"no rows with metric '{metric}'")
    sel = df[(df["benchmark"] == benchmark) & (df["dataset"] == dataset) & (df["metric"] == metric)].copy()
    sel["rank_group"] = np.where(sel["random_weights"], "random weights", "trained")
    sel = sel.sort_values(["rank_group", "value"], ascending=[False, False], kind="stable")
    sel["rank"] = sel.groupby("rank_group")["value"].rank(ascending=False, method="min").astype(int)
    return sel.reset_index(drop=True)
