"""Benchmark tables: models as rows, one benchmark's datasets as columns, a mean and a mean rank.

Only numbers that are comparable share a table: the same benchmark, metric, probe and study (one publication,
one local protocol or one uploaded file). Aggregates published as rows (``mean(...)``) are left out; the mean
here is over the datasets a model has, with how many of how many. The rank of a model is its mean rank across
the datasets it has (each dataset ranks the trained models that have it, best = 1), so no dataset dominates
by its scale. Models with random weights are shown but never ranked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rl_core.errors import ConfigError

KEY = ("benchmark", "metric", "probe", "study")
RANDOM_SUFFIX = " (random weights)"
#: the fixed columns of a benchmark table, before and after the dataset columns
LEAD_COLUMNS = ["Model", "Mean rank", "Mean", "Datasets (of N)"]  # N: the table's number of datasets
TRAIL_COLUMNS = ["Params (M)", "Emb. dim", "Family", "Runs here", "Zoo entry"]


def comparable_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that can enter a benchmark table: per-dataset numbers (published aggregates left out)."""
    return df[~df["dataset"].astype(str).str.startswith("mean(")]


def table_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Every (benchmark, metric, probe, study) with a table: models, datasets and numbers in each."""
    rows = comparable_rows(df)
    keys = rows.groupby(list(KEY), sort=True).agg(models=("model", "nunique"), datasets=("dataset", "nunique"),
                                                   numbers=("value", "size"))
    return keys.reset_index()


@dataclass
class BenchmarkTable:
    """One comparable table: ``scores`` (display columns, best rank first), its key and the rows used."""

    benchmark: str
    metric: str
    probe: str
    study: str
    datasets: list[str]
    scores: pd.DataFrame
    rows: pd.DataFrame = field(repr=False)
    averaged_cells: int = 0  # cells that are the mean of several numbers (seeds of a run, repeated uploads)

    @property
    def title(self) -> str:
        probe = "no probe (embeddings used directly)" if self.probe == "none" else f"{self.probe} probe"
        return f"{self.benchmark} · {self.metric} · {probe} · {self.study}"

    def best(self) -> dict[str, float]:
        """Best value of each numeric column among ranked (trained) models: max, or min for the rank."""
        trained = self.scores[self.scores["Mean rank"].notna()]
        best = {c: float(trained[c].max()) for c in [*self.datasets, "Mean"] if trained[c].notna().any()}
        if trained["Mean rank"].notna().any():
            best["Mean rank"] = float(trained["Mean rank"].min())
        return best


def choose_key(keys: pd.DataFrame, benchmark: str | None = None, metric: str | None = None,
               probe: str | None = None, study: str | None = None, strict: bool = False) -> dict[str, str]:
    """A valid table key from a (possibly partial or stale) choice, one level at a time.

    A level whose value is missing or not offered for the levels above takes the option with the most models
    (BEANS first for the benchmark); with ``strict`` an offered-but-absent value raises :class:`ConfigError`
    naming the choices instead.
    """
    chosen: dict[str, str] = {}
    sub = keys
    for level, wanted in zip(KEY, (benchmark, metric, probe, study)):
        options = sub.groupby(level)["models"].sum().sort_values(ascending=False, kind="stable")
        if options.empty:
            raise ConfigError("the leaderboard has no per-dataset results")
        if wanted and wanted in options.index:
            value = wanted
        elif wanted and strict:
            where = ", ".join(f"{k}={v!r}" for k, v in chosen.items())
            raise ConfigError(f"no {level} {wanted!r}{' for ' + where if where else ''}; "
                              f"choose one of {sorted(options.index)}")
        elif level == "benchmark" and "BEANS" in options.index:
            value = "BEANS"
        else:
            value = str(options.index[0])
        chosen[level] = value
        sub = sub[sub[level] == value]
    return chosen


def options(keys: pd.DataFrame, chosen: dict[str, str]) -> dict[str, list[str]]:
    """The choices of each level given the levels above it (for dependent dropdowns)."""
    out, sub = {}, keys
    for level in KEY:
        out[level] = sorted(sub[level].unique().tolist())
        sub = sub[sub[level] == chosen[level]]
    return out


def display_name(model: str, random_weights: bool) -> str:
    return f"{model}{RANDOM_SUFFIX}" if random_weights else model


def benchmark_table(df: pd.DataFrame, benchmark: str, metric: str, probe: str, study: str) -> BenchmarkTable:
    """The models x datasets table of one key (values: mean over seeds where a run has several)."""
    rows = comparable_rows(df)
    rows = rows[(rows["benchmark"] == benchmark) & (rows["metric"] == metric) & (rows["probe"] == probe)
                & (rows["study"] == study)].copy()
    if rows.empty:
        raise ConfigError(f"no results for {benchmark} · {metric} · {probe} · {study}")
    # a random-weight run is named by its architecture's registry key, not by the trained model's name
    rows["row_name"] = [display_name(s if r else m, r)
                        for m, s, r in zip(rows["model"], rows["name_in_source"], rows["random_weights"])]
    cells = rows.groupby(["row_name", "dataset"])["value"].agg(["mean", "size"])
    wide = cells["mean"].unstack("dataset")
    datasets = sorted(wide.columns, key=lambda d: (-wide[d].notna().sum(), d))  # best covered first
    wide = wide[datasets]
    ranked = ~wide.index.str.endswith(RANDOM_SUFFIX)
    ranks = wide[ranked].rank(axis=0, ascending=False, method="average")
    facts = rows.groupby("row_name").agg(
        family=("family", "first"), parameters=("parameters", "first"), embedding_dim=("embedding_dim", "first"),
        weights_here=("weights_here", "any"), registry_key=("registry_key", "first"))
    scores = pd.DataFrame({
        "Model": wide.index,
        "Mean rank": ranks.mean(axis=1).reindex(wide.index).round(2).to_numpy(),
        "Mean": wide.mean(axis=1).round(4).to_numpy(),
        f"Datasets (of {len(datasets)})": wide.notna().sum(axis=1).to_numpy(),
    })
    for d in datasets:
        scores[d] = wide[d].round(4).to_numpy()
    facts = facts.reindex(wide.index)
    scores["Params (M)"] = (facts["parameters"] / 1e6).round(1).to_numpy()
    scores["Emb. dim"] = facts["embedding_dim"].to_numpy()
    scores["Family"] = facts["family"].to_numpy()
    scores["Runs here"] = np.where(facts["weights_here"].to_numpy(dtype=bool), "yes", "no")
    scores.loc[~ranked, "Runs here"] = "random"
    scores["Zoo entry"] = facts["registry_key"].fillna("").to_numpy()
    scores = scores.sort_values(["Mean rank", "Mean"], ascending=[True, False], na_position="last", kind="stable")
    return BenchmarkTable(benchmark, metric, probe, study, datasets, scores.reset_index(drop=True), rows,
                          averaged_cells=int((cells["size"] > 1).sum()))
