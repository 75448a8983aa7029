"""Leaderboard data: published table built from its source, aliases, comparable tables, uploads, atomic appends."""

from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl_core import leaderboard as lb
from rl_core import leaderboard_tables as lt
from rl_core.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent.parent / "leaderboard_data"
# the build script lives with the data (``python -m leaderboard_data.build_published``); loaded from its file so
# that the tests do not depend on how the repository root is put on sys.path
_spec = importlib.util.spec_from_file_location("build_published", DATA_DIR / "build_published.py")
build_published = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_published)
MIRON = "Miron et al., What Matters for Bioacoustic Encoding (arXiv:2508.11845, ICLR 2026)"


def _local_row(i: int, model: str = "birdnet_v2_4", random_weights: bool = False) -> dict:
    return {
        "model": model, "family": "BirdNET", "benchmark": "rl_core bundled", "dataset": "great_tit_individuals",
        "task": "individual identification", "metric": "accuracy", "probe": "linear", "value": (i % 100) / 100,
        "source": "rl_core runner test", "random_weights": random_weights, "date": "2026-11-25", "seed": i,
        "protocol": "test", "wall_time_s": 1.5, "checkpoint_sha256": "ab" * 32,
    }


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return lb.load_leaderboard(DATA_DIR)


def test_committed_published_table_matches_schema_and_source():
    df = lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE)
    assert list(df.columns) == lb.COLUMNS
    assert df["value"].dtype == "float64" and df["value"].between(0, 1).all()
    assert (df["kind"] == "published").all()
    # 2,529 source numbers minus the 46 cells that say "-" or "N/A" (not reported)
    assert len(df) == 2483
    assert df["source_row"].is_unique and df["source_row"].min() >= 1 and df["source_row"].max() <= 2529
    assert set(df["probe"]) == {"linear", "attentive", "fine-tuned", "none", "not stated"}
    assert "Other" not in set(df["family"])
    schema = json.loads((DATA_DIR / "schema.json").read_text())
    assert [c["name"] for c in schema["columns"]] == lb.COLUMNS
    assert schema["kinds"] == ["published", "local", "submitted"]


def test_every_published_number_traces_back_to_its_source_row():
    source = build_published.default_source_csv()
    if not source.is_file():
        pytest.skip(f"published source not present: {source}")
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    df = lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE)
    for row in df.itertuples():
        src = raw.iloc[row.source_row - 1]
        scale = 100.0 if "(%)" in src["metric"] else 1.0
        assert math.isclose(row.value, float(src["value"]) / scale, abs_tol=1e-9), row
        assert src["source"] in row.source
    first = df[df["source_row"] == 1].iloc[0]
    assert (first["model"], first["dataset"], first["metric"], first["value"]) == (
        "BEATS (SFT)", "mean(6 datasets)", "accuracy", 0.724)
    audiomae = df[df["source_row"] == 1470 - 1].iloc[0]  # grep line 1470 = data row 1469
    assert audiomae["model"] == "AudioMAE" and audiomae["probe"] == "linear"
    assert audiomae["value"] == pytest.approx(0.4469)
    # the committed file is exactly what the one build script produces, and --check says so
    pd.testing.assert_frame_equal(build_published.build_published_table(source), df)
    assert build_published.main(["--check"]) == 0


def test_build_refuses_a_model_missing_from_the_alias_table(tmp_path):
    source = tmp_path / "src.csv"
    source.write_text("table,model,benchmark,dataset,metric,value,source\n"
                      "ESP_WhatMatters_Table_x,Mystery-Net,BEANS,watkins,Probe accuracy (linear probe),0.5,t\n")
    with pytest.raises(lb.LeaderboardError, match="row 1: model 'Mystery-Net' is not in model_aliases.csv"):
        build_published.build_published_table(source)
    assert build_published.main(["--source", str(source), "--check"]) == 2


def test_validate_names_every_bad_row():
    good = pd.DataFrame([lb._local_row(_local_row(1)), lb._local_row(_local_row(2))])
    lb.validate(good)
    with pytest.raises(lb.LeaderboardError, match=r"row 2: value must be in \[0, 1\].*got 3.0"):
        lb.validate(good.assign(value=[0.5, 3.0]))
    with pytest.raises(lb.LeaderboardError, match="unknown \\['extra'\\]"):
        lb.validate(good.assign(extra=1))
    with pytest.raises(lb.LeaderboardError, match="row 1: 'model' is empty.*row 2: 'model' is empty"):
        lb.validate(good.assign(model=""))
    with pytest.raises(lb.LeaderboardError, match="'seed' must be a whole number"):
        lb.validate(good.assign(seed=["x", 1]))
    with pytest.raises(lb.LeaderboardError, match="unknown field"):
        lb.append_local_results([{**_local_row(1), "modle": "x"}], directory="/nonexistent-never-written")


def _append_many(directory: str, worker: int, n: int) -> None:
    for i in range(n):
        lb.append_local_results([_local_row(worker * 1000 + i)], directory=directory)


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    # fork where available (no re-import of torch in the children); two real OS processes either way
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 15)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = lb.read_results_csv(tmp_path / lb.LOCAL_FILE)
    assert len(df) == 30
    assert sorted(df["seed"]) == sorted([1000 + i for i in range(15)] + [2000 + i for i in range(15)])
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_failed_append_keeps_existing_rows(tmp_path):
    lb.append_local_results([_local_row(1)], directory=tmp_path)
    before = (tmp_path / lb.LOCAL_FILE).read_bytes()
    with pytest.raises(lb.LeaderboardError):
        lb.append_local_results([_local_row(2), {**_local_row(3), "value": float("nan")}], directory=tmp_path)
    assert (tmp_path / lb.LOCAL_FILE).read_bytes() == before


def test_aliases_give_one_name_per_model_and_registry_facts(full):
    aliases = lb.read_aliases(DATA_DIR)
    published = lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE)
    assert set(published["model"]) <= set(aliases["name"])  # every source name was reviewed
    frame = pd.DataFrame([lb._local_row({**_local_row(i), "model": m, "family": "x"})
                          for i, m in enumerate(["BirdNet", "BirdNET", "birdnet_v2_4"])])
    resolved = lb.resolve_models(lb.validate(frame), DATA_DIR)
    assert set(resolved["model"]) == {"BirdNET"}
    assert list(resolved["name_in_source"]) == ["BirdNet", "BirdNET", "birdnet_v2_4"]
    assert set(resolved["family"]) == {"BirdNET"}  # from the registry, not the row's "x"
    assert set(resolved["registry_key"]) == {"birdnet_v2_4"}
    from rl_core.registry import get_model_entry

    entry = get_model_entry("birdnet_v2_4")
    assert (resolved["parameters"] == entry.parameters).all()
    assert (resolved["embedding_dim"] == entry.embedding_dim).all()
    # in the real data the published "BirdNet" and the local birdnet_v2_4 runs are one model
    birdnet = full[full["model"] == "BirdNET"]
    assert set(birdnet["name_in_source"]) == {"BirdNet", "birdnet_v2_4"}
    assert set(birdnet["kind"]) == {"published", "local"}
    # an architecture-only alias gives the size but no zoo link
    beats = full[full["name_in_source"] == "BEATs"].iloc[0]
    assert beats["registry_key"] == "" and beats["parameters"] == get_model_entry("beats_iter3_plus_as2m").parameters
    assert "Other" not in set(full["family"])


def _recompute(full: pd.DataFrame, metric: str, probe: str, study: str) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """The BEANS table, its means and mean ranks, straight from the raw rows with pandas."""
    rows = full[(full["benchmark"] == "BEANS") & (full["metric"] == metric) & (full["probe"] == probe)
                & (full["study"] == study) & ~full["dataset"].str.startswith("mean(")]
    wide = rows.pivot_table(index="model", columns="dataset", values="value", aggfunc="mean")
    ranks = wide.rank(ascending=False, method="average").mean(axis=1)
    return wide, wide.mean(axis=1), ranks


def test_beans_linear_probe_table_equals_a_pandas_recomputation(full):
    keys = lt.table_keys(full)
    assert lt.choose_key(keys) == {"benchmark": "BEANS", "metric": "accuracy", "probe": "linear", "study": MIRON}
    table = lt.benchmark_table(full, "BEANS", "accuracy", "linear", MIRON)
    wide, means, ranks = _recompute(full, "accuracy", "linear", MIRON)
    scores = table.scores.set_index("Model")
    assert scores.index.is_unique and set(scores.index) == set(wide.index) and len(scores) == 20
    assert sorted(table.datasets) == sorted(wide.columns) == ["bats", "cbi", "dogs", "esc50", "humbugdb", "watkins"]
    assert list(table.scores.columns) == ["Model", "Mean rank", "Mean", "Datasets (of 6)", *table.datasets,
                                          *lt.TRAIL_COLUMNS]
    for model in wide.index:
        assert scores.loc[model, "Mean"] == pytest.approx(means[model], abs=6e-5)
        assert scores.loc[model, "Mean rank"] == pytest.approx(ranks[model], abs=6e-3)
        for dataset in wide.columns:
            assert scores.loc[model, dataset] == pytest.approx(wide.loc[model, dataset], abs=6e-5)
    assert list(table.scores["Mean rank"]) == sorted(table.scores["Mean rank"])  # best rank first
    assert scores.loc["BirdNET", "Runs here"] == "yes" and scores.loc["BirdNET", "Zoo entry"] == "birdnet_v2_4"
    assert scores.loc["BirdNET", "Params (M)"] == pytest.approx(12.9)
    best = table.best()
    assert best["esc50"] == wide["esc50"].max() and best["Mean rank"] == pytest.approx(ranks.min(), abs=6e-3)


def test_a_model_with_fewer_datasets_is_counted_and_ranked_on_what_it_has(full):
    study = "Schwinger et al., Foundation Models for Bioacoustics - a Comparative Review (arXiv:2508.01277)"
    table = lt.benchmark_table(full, "BEANS", "accuracy", "linear", study)
    wide, means, ranks = _recompute(full, "accuracy", "linear", study)
    count = table.scores.set_index("Model")[f"Datasets (of {len(table.datasets)})"]
    assert (count == wide.notna().sum(axis=1).reindex(count.index)).all()
    got = table.scores.set_index("Model")["Mean rank"]
    assert np.allclose(got.reindex(ranks.index), ranks, atol=6e-3)


def test_no_table_mixes_metrics_probes_or_studies(full):
    keys = lt.table_keys(full)
    assert len(keys) > 20
    for key in keys[list(lt.KEY)].to_dict("records"):
        table = lt.benchmark_table(full, **key)
        for column in lt.KEY:
            assert set(table.rows[column]) == {key[column]}, (key, column)
        assert not table.rows["dataset"].str.startswith("mean(").any()  # published aggregates stay out
        # a cell averages several numbers only for seeds of one local run, never two sources
        per_cell = table.rows.groupby(["row_name", "dataset"]).agg(n=("value", "size"), kinds=("kind", "nunique"),
                                                                   sources=("source_row", "nunique"))
        published = per_cell[table.rows.groupby(["row_name", "dataset"])["kind"].first() == "published"]
        assert (published["n"] == 1).all(), key
        assert (per_cell["kinds"] == 1).all()


def test_random_weight_baselines_are_shown_but_never_ranked(tmp_path):
    lb.write_published(lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE), tmp_path)
    lb.append_local_results([_local_row(90), {**_local_row(40), "dataset": "multi_taxon"},
                             _local_row(99, model="eat_base_epoch30_pretrain", random_weights=True),
                             _local_row(50, model="other_model")], directory=tmp_path)
    df = lb.load_leaderboard(tmp_path)
    assert list(df.columns) == lb.LOADED_COLUMNS
    assert df["value"].dtype == "float64" and df["random_weights"].dtype == bool
    table = lt.benchmark_table(df, "rl_core bundled", "accuracy", "linear", "rl_core benchmark runner (test)")
    scores = table.scores.set_index("Model")
    assert scores.loc["BirdNET", "Mean rank"] == 1.0 and scores.loc["other_model", "Mean rank"] == 2.0
    baseline = scores.loc["eat_base_epoch30_pretrain (random weights)"]
    assert np.isnan(baseline["Mean rank"]) and baseline["Runs here"] == "random"
    assert baseline["great_tit_individuals"] == 0.99  # the best number, but not the best of the column
    assert table.best()["great_tit_individuals"] == 0.9
    assert scores.loc["BirdNET", "Datasets (of 2)"] == 2 and scores.loc["other_model", "Datasets (of 2)"] == 1


def test_choose_key_falls_back_or_refuses(full):
    keys = lt.table_keys(full)
    key = lt.choose_key(keys, "BirdSet", "accuracy")  # no accuracy on BirdSet: the most common metric instead
    assert key["benchmark"] == "BirdSet" and key["metric"] != "accuracy"
    with pytest.raises(ConfigError, match="no metric 'accuracy' for benchmark='BirdSet'; choose one of"):
        lt.choose_key(keys, "BirdSet", "accuracy", strict=True)


BAD_UPLOAD = b"""model,benchmark,dataset,metric,probe,value,source
My-Net,BEANS,watkins,accuracy,linear,0.8,Our lab 2026
My-Net,BEANS,cbi,accuracy,linear,81,Our lab 2026
,BEANS,dogs,accuracy,linear,0.7,Our lab 2026
My-Net,BEANS,bats,accuracy,linear,seventy,Our lab 2026
"""
GOOD_UPLOAD = b"""model,benchmark,dataset,metric,probe,value,source,source_link
My-Net,BEANS,watkins,accuracy,linear,0.8,Our lab 2026 (Table 1),https://example.org/paper
My-Net,BEANS,cbi,accuracy,linear,0.81,Our lab 2026 (Table 1),https://example.org/paper
BirdNET,BEANS,watkins,accuracy,linear,0.85,Our lab 2026 (Table 1),https://example.org/paper
"""


def test_bad_upload_is_refused_row_by_row_and_stores_nothing(tmp_path):
    with pytest.raises(lb.SubmissionError) as info:
        lb.submit_results(BAD_UPLOAD, "ours.csv", tmp_path)
    assert [row for row, _ in info.value.problems] == [2, 3, 4]
    message = str(info.value)
    assert "3 of 4 rows refused, nothing stored" in message
    assert "row 2: value must be in [0, 1]" in message and "got 81.0" in message
    assert "row 3: 'model' is empty" in message and "row 4: 'value' must be a number, got 'seventy'" in message
    assert not (tmp_path / lb.SUBMITTED_DIR).exists()
    with pytest.raises(lb.SubmissionError, match="columns missing \\['source'\\], unknown \\['score'\\]"):
        lb.submit_results(b"model,benchmark,dataset,metric,probe,value,score\nA,B,c,m,p,0.1,x\n", "x.csv", tmp_path)
    with pytest.raises(lb.SubmissionError, match="not a readable CSV"):
        lb.submit_results(b"\xff\xfe\x00garbage", "x.csv", tmp_path)


def test_good_upload_appears_marked_submitted_and_never_rewrites(tmp_path):
    lb.write_published(lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE), tmp_path)
    lb.append_local_results([_local_row(90)], directory=tmp_path)
    stored = {p: p.read_bytes() for p in tmp_path.glob("*.csv")}
    path, rows = lb.submit_results(GOOD_UPLOAD, "ours.csv", tmp_path)
    assert path.parent == tmp_path / lb.SUBMITTED_DIR and len(rows) == 3
    assert {p: p.read_bytes() for p in tmp_path.glob("*.csv")} == stored  # nothing stored was rewritten
    with pytest.raises(lb.SubmissionError, match="already submitted"):
        lb.submit_results(GOOD_UPLOAD, "again.csv", tmp_path)
    df = lb.load_leaderboard(tmp_path)
    mine = df[df["kind"] == "submitted"]
    assert len(mine) == 3 and set(mine["study"]) == {"submitted: Our lab 2026 (Table 1)"}
    assert mine["notes"].str.contains("submitted as ours.csv on .* \\(file sha256 [0-9a-f]{16}\\)").all()
    assert set(mine["model"]) == {"My-Net", "BirdNET"} and list(mine["source_row"]) == [1, 2, 3]
    table = lt.benchmark_table(df, "BEANS", "accuracy", "linear", "submitted: Our lab 2026 (Table 1)")
    assert set(table.scores["Model"]) == {"My-Net", "BirdNET"}
    # the published BEANS table is untouched by the upload
    assert "My-Net" not in set(lt.benchmark_table(df, "BEANS", "accuracy", "linear", MIRON).scores["Model"])


def test_committed_local_results_have_provenance():
    df = lb.read_results_csv(DATA_DIR / lb.LOCAL_FILE)
    assert (df["kind"] == "local").all() and (df["source_row"] == -1).all()
    for col in ("checkpoint_sha256", "rl_core_version", "git_commit", "hardware", "protocol", "date"):
        trained = df[~df["random_weights"]]
        assert (trained[col] != "").all(), col
    assert (df["wall_time_s"] > 0).all() and (df["seed"] >= 0).all()
    birdnet = df[df["model"] == "birdnet_v2_4"]
    assert set(birdnet["dataset"]) == {"great_tit_individuals", "multi_taxon"} and set(birdnet["seed"]) == {0, 1, 2}
    assert not birdnet["random_weights"].any() and birdnet["checkpoint_sha256"].str.len().eq(64).all()
    random_rows = df[df["random_weights"]]
    assert len(random_rows) and (random_rows["checkpoint_sha256"] == "").all()
    assert random_rows["notes"].str.contains("RANDOM WEIGHTS").all()
    full = lb.load_leaderboard()
    assert set(full["kind"]) == {"published", "local"} and len(full) == 2483 + len(df)
