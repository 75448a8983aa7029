"""Leaderboard tab handlers: benchmark tables, plots with one colour per family, sources, raw view, uploads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from rl_core import leaderboard as lb
from ui import leaderboard

DATA_DIR = Path(__file__).resolve().parent.parent / "leaderboard_data"
MIRON = "Miron et al., What Matters for Bioacoustic Encoding (arXiv:2508.11845, ICLR 2026)"


@pytest.fixture(scope="module")
def board() -> leaderboard.Leaderboard:
    return leaderboard.Leaderboard(DATA_DIR)


@pytest.fixture
def own_board(tmp_path) -> leaderboard.Leaderboard:
    for name in ("published_results.csv", "local_results.csv", "model_aliases.csv", "schema.json"):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return leaderboard.Leaderboard(tmp_path)


def test_tables_event_fills_every_output_for_the_default_table(board):
    benchmark, metric, probe, study, caption, table, bar, scatter, heatmap, sources, provenance = \
        board.tables_event(None, None, None, None)
    assert (benchmark.value, metric.value, probe.value, study.value) == ("BEANS", "accuracy", "linear", MIRON)
    assert "BirdSet" in benchmark.choices.__repr__() and "attentive" in repr(probe.choices)
    assert "20 models x 6 datasets" in caption and "metric **accuracy**" in caption
    value = table.value  # what goes to the browser: numbers stay numbers, best cells styled
    assert value["headers"][:4] == ["Model", "Mean rank", "Mean", "Datasets (of 6)"]
    assert table.datatype[:4] == ["str", "number", "number", "number"]
    styles = value["metadata"]["styling"]
    esc50 = value["headers"].index("esc50")
    best_rows = [i for i, row in enumerate(styles) if "font-weight: 700" in row[esc50]]
    assert len(best_rows) == 1 and value["data"][best_rows[0]][esc50] == pytest.approx(0.958)
    assert value["data"][best_rows[0]][0] == "EAT-base (AudioSet fine-tuned)"
    # plots: the label names the metric actually plotted
    assert "mean accuracy over datasets" in bar.layout.title.text and bar.layout.xaxis.title.text.startswith(
        "mean accuracy")
    assert scatter.layout.xaxis.type == "log" and scatter.layout.yaxis.title.text == "mean accuracy"
    assert heatmap.layout.coloraxis.colorbar.title.text == "accuracy"
    assert sources.count("\n- ") == 1 and MIRON in sources and "<details>" in sources
    assert "**BirdNET** (named 'BirdNet' in the source)" in provenance


def test_a_family_has_one_colour_in_every_plot(board):
    colours = {}
    for key in [("BEANS", "accuracy", "linear", MIRON), ("BirdSet", "mAP", "linear", MIRON)]:
        table, _, _ = board.table(*key)
        for fig in (leaderboard.bar_figure(table, board.colors), leaderboard.scatter_figure(table, board.colors)):
            for trace in fig.data:
                colours.setdefault(trace.name, set()).add(trace.marker.color)
    assert {"BEATs", "EAT", "EfficientNet"} <= set(colours)
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # and different families differ


def test_bar_shows_mean_or_rank_as_its_axis_says(board):
    table, _, _ = board.table("BEANS", "accuracy", "linear", MIRON)
    by_rank = leaderboard.bar_figure(table, board.colors, "Mean rank")
    assert "mean rank by accuracy" in by_rank.layout.xaxis.title.text
    plotted = {m: x for trace in by_rank.data for m, x in zip(trace.y, trace.x)}
    expected = table.scores.set_index("Model")["Mean rank"]
    assert plotted == pytest.approx(expected.to_dict())


def test_local_table_shows_provenance_on_demand(board):
    *_, provenance = board.tables_event("rl_core bundled", "accuracy", "linear", None)
    line = next(x for x in provenance.splitlines() if x.startswith("- **BirdNET**"))
    assert "model sha256 `55f3e4055b1a13bf…`" in line and "commit `1095a6800da7`" in line
    assert "AMD EPYC" in line and "2026-11-25" in line and "seeds [0, 1, 2]" in line
    assert "(random weights)** · model sha256 none (random weights)" in provenance


def test_api_takes_named_parameters_and_refuses_unknown_choices(board):
    answer = board.api(benchmark="BEANS", metric="accuracy", probe="linear")
    assert answer["study"] == MIRON and answer["headers"][0] == "Model" and len(answer["data"]) == 20
    assert answer["best"]["esc50"] == 0.958 and answer["best"]["Mean rank"] == answer["data"][0][1]
    assert answer["datasets"] == [h for h in answer["headers"] if h in {"bats", "cbi", "dogs", "esc50", "humbugdb",
                                                                       "watkins"}]
    import gradio as gr

    with pytest.raises(gr.Error, match="no metric 'top-5'"):
        board.api(benchmark="BEANS", metric="top-5")


def test_raw_view_filters_search_and_numeric_values(board):
    df = board.df
    assert len(leaderboard.filter_rows(df)) == len(df)
    beans = leaderboard.filter_rows(df, benchmark=["BEANS"])
    assert 0 < len(beans) < len(df) and set(beans["benchmark"]) == {"BEANS"}
    assert set(leaderboard.filter_rows(df, search="birdnet")["model"]) == {"BirdNET"}  # found by either name
    assert leaderboard.filter_rows(df, search="nothing like this").empty
    table, count, sources = board.raw_event(["BEANS"], [], [], ["accuracy"], ["linear"], [], [], "", None)
    view = table.value
    values = [row[view["headers"].index("value")] for row in view["data"]]
    assert values == sorted(values, reverse=True) and count.startswith(f"**{len(view['data'])}** of {len(df)}")
    assert sources.count("\n- ") == 2  # Miron et al. and Schwinger et al., one line each


def test_download_is_written_on_demand_and_reused(board):
    args = (["BirdSet"], [], [], [], [], [], [], "")
    button = board.download_event(*args)
    first = button.value["path"]  # Gradio copies it into its cache, in a folder named by the content hash
    assert first == board.download_event(*args).value["path"]  # the same rows: the same file, nothing new written
    rows = pd.read_csv(first)
    assert rows["benchmark"].eq("BirdSet").all() and button.label == f"Download {len(rows)} rows (CSV)"
    other = board.download_event(["BEANS"], [], [], [], [], [], [], "").value["path"]
    assert other != first and pd.read_csv(other)["benchmark"].eq("BEANS").all()


def test_upload_through_the_tab(own_board, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,benchmark,dataset,metric,probe,value,source\n"
                   "My-Net,BEANS,watkins,accuracy,linear,0.8,Lab\nMy-Net,BEANS,cbi,accuracy,linear,80,Lab\n")
    message, *_ = own_board.submit(str(bad))
    assert message.startswith("**Refused, nothing stored.**") and "- row 2: value must be in [0, 1]" in message
    good = tmp_path / "good.csv"
    good.write_text("model,benchmark,dataset,metric,probe,value,source\n"
                    "My-Net,BEANS,watkins,accuracy,linear,0.8,Lab\nMy-Net,BEANS,cbi,accuracy,linear,0.7,Lab\n")
    kinds = dict(zip(leaderboard.FILTERS, own_board.filter_choices_event()))["kind"]
    assert "submitted" not in kinds.constructor_args["choices"]
    message, benchmark, metric, probe, study = own_board.submit(str(good))
    assert message.startswith("**Stored 2 rows** from good.csv")
    # the raw view's filters offer what the upload added (the page runs this after each upload and at load)
    kinds = dict(zip(leaderboard.FILTERS, own_board.filter_choices_event()))["kind"]
    assert "submitted" in kinds.constructor_args["choices"]
    assert (benchmark.value, metric.value, probe.value, study.value) == ("BEANS", "accuracy", "linear",
                                                                           "submitted: Lab")
    _, _, _, _, caption, table, *_ = own_board.tables_event("BEANS", "accuracy", "linear", "submitted: Lab")
    assert table.value["data"][0][0] == "My-Net" and "Results: submitted." in caption
    assert (own_board.df["kind"] == "submitted").sum() == 2
    assert len(list((Path(own_board.data_dir) / lb.SUBMITTED_DIR).glob("*.csv"))) == 1


def test_a_benchmark_run_appears_without_a_reload(own_board):
    row = {"model": "esp_aves2_eat_all", "family": "EAT", "benchmark": "rl_core bundled",
           "dataset": "multi_taxon", "task": "taxon classification", "metric": "accuracy", "probe": "linear",
           "value": 0.5, "source": "rl_core runner test", "date": "2026-12-01", "seed": 0,
           "protocol": "bundled-v1", "checkpoint_sha256": "cd" * 32}
    lb.append_local_results([row], own_board.data_dir)  # as `python -m rl_core benchmark` would
    _, _, _, _, caption, table, *_ = own_board.tables_event("rl_core bundled", "accuracy", "linear", None)
    models = [r[0] for r in table.value["data"]]
    assert "EAT-all" in models and "BirdNET" in models  # the registry key got its canonical name


def test_caption_says_which_cells_average_several_numbers(board):
    caption = board.tables_event("rl_core bundled", "accuracy", "linear", None)[4]
    assert "2 cells are the mean of several numbers (seeds of one run)" in caption  # BirdNET, seeds 0-2
    assert "random weights are baselines" in caption
