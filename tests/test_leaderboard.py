"""Leaderboard data: published table built from its source, schema, atomic appends from two processes."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from rl_core import leaderboard as lb

DATA_DIR = Path(__file__).resolve().parent.parent / "leaderboard_data"


def _local_row(i: int, model: str = "birdnet_v2_4", random_weights: bool = False) -> dict:
    return {
        "model": model, "family": "BirdNET", "benchmark": "rl_core bundled", "dataset": "great_tit_individuals",
        "task": "individual identification", "metric": "accuracy", "probe": "linear", "value": (i % 100) / 100,
        "source": "rl_core runner test", "random_weights": random_weights, "date": "2026-11-25", "seed": i,
        "protocol": "test", "wall_time_s": 1.5, "checkpoint_sha256": "ab" * 32,
    }


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


def test_every_published_number_traces_back_to_its_source_row():
    source = lb.default_source_csv()
    if not source.is_file():
        pytest.skip(f"published source not present: {source}")
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    df = lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE)
    for row in df.itertuples():
        src = raw.iloc[row.source_row - 1]
        scale = 100.0 if "(%)" in src["metric"] else 1.0
        assert math.isclose(row.value, float(src["value"]) / scale, abs_tol=1e-9), row
        assert src["source"] in row.source
    # spot checks read from the source file by hand
    first = df[df["source_row"] == 1].iloc[0]
    assert (first["model"], first["dataset"], first["metric"], first["value"]) == (
        "BEATS (SFT)", "mean(6 datasets)", "accuracy", 0.724)
    audiomae = df[df["source_row"] == 1470 - 1].iloc[0]  # grep line 1470 = data row 1469
    assert audiomae["model"] == "AudioMAE" and audiomae["probe"] == "linear"
    assert audiomae["value"] == pytest.approx(0.4469)
    # the committed file is exactly what the builder produces
    rebuilt = lb.build_published_table(source)
    pd.testing.assert_frame_equal(rebuilt, df)


def test_validate_names_bad_column_and_value():
    good = pd.DataFrame([lb._local_row(_local_row(1))])
    lb.validate(good)
    with pytest.raises(lb.LeaderboardError, match="value must be in"):
        lb.validate(good.assign(value=3.0))
    with pytest.raises(lb.LeaderboardError, match="unknown \\['extra'\\]"):
        lb.validate(good.assign(extra=1))
    with pytest.raises(lb.LeaderboardError, match="'model' is empty"):
        lb.validate(good.assign(model=""))
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


def test_load_leaderboard_merges_and_random_weights_are_ranked_apart(tmp_path):
    lb.write_published(lb.read_results_csv(DATA_DIR / lb.PUBLISHED_FILE), tmp_path)
    lb.append_local_results([_local_row(90), _local_row(99, model="random_beats", random_weights=True),
                             _local_row(50, model="other_model")], directory=tmp_path)
    df = lb.load_leaderboard(tmp_path)
    assert list(df.columns) == lb.COLUMNS
    assert df["value"].dtype == "float64" and df["random_weights"].dtype == bool
    assert set(df["kind"]) == {"published", "local"}
    assert (df.loc[df["kind"] == "local", "source_row"] == -1).all()
    ranked = lb.rank_models(df, "rl_core bundled", "great_tit_individuals", "accuracy")
    trained = ranked[ranked["rank_group"] == "trained"]
    assert list(trained["model"]) == ["birdnet_v2_4", "other_model"] and list(trained["rank"]) == [1, 2]
    rand = ranked[ranked["rank_group"] == "random weights"]
    assert list(rand["model"]) == ["random_beats"] and list(rand["rank"]) == [1]


def test_model_family_rules():
    assert lb.model_family("BirdNet") == "BirdNET"
    assert lb.model_family("sl-EAT-all") == "EAT"
    assert lb.model_family("BEATs-NLM (NatureLM-audio encoder)") == "BEATs"
    assert lb.model_family("EffNetB0-bio") == "EfficientNet"
    assert lb.model_family("Bird-MAE") == "BirdMAE"
    assert lb.model_family("something new") == "Other"


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
