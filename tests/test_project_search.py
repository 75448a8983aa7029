"""Search, labels, review calibration and custom classifiers inside a real BirdNET project (library and CLI).

The project is tiled from bundled recordings so that every 3-s window holds one known taxon
(tests/similar_fixture.py): great tit in two files, Bengalese finch in one, zebra finch in one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from similar_fixture import make_tiled_project_audio
from test_cli import run_cli

from rl_core.custom_classifier import CustomClassifier
from rl_core.detection_filters import DetectionFilter
from rl_core.errors import ConfigError
from rl_core.project import ProjectStore, RunSettings, analyse_project
from rl_core.project import search as ps

FINCH = "siteB/20240516_080000.wav"
GREAT_TIT = "siteA/20240515_063000.wav"


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """(project folder, recordings folder, {file -> taxon per window}) analysed once with BirdNET."""
    root = tmp_path_factory.mktemp("tiled") / "rec"
    truth = make_tiled_project_audio(root)
    project = root.parent / "project"
    summary = analyse_project([root], project, RunSettings("birdnet_v2_4"), engine="inline")
    assert summary.exit_code == 0
    return project, root, truth


@pytest.fixture
def project(tiled, tmp_path) -> Path:
    """A private copy of the analysed project (labels written by one test stay in it)."""
    copy = tmp_path / "project"
    shutil.copytree(tiled[0], copy)
    return copy


def _taxon(truth, file: str, window: int) -> str:
    return truth[file][window]


def test_search_ranks_same_taxon_first_with_filters_and_clip_kinds(tiled, tmp_path):
    project, root, truth = tiled
    found = ps.search(project, [f"{FINCH}#0"], top_n=10)
    assert list(found.columns) == ps.RESULT_COLUMNS
    assert (found.file.iloc[0], found.window_index.iloc[0]) == (FINCH, 0)
    assert found.similarity.iloc[0] == pytest.approx(1.0, abs=2e-3)
    assert np.all(np.diff(found.similarity) <= 1e-6)
    taxa = [_taxon(truth, f, w) for f, w in zip(found.file, found.window_index)]
    precision_at_5 = np.mean([t == "Lonchura striata domestica" for t in taxa[1:6]])
    chance = 7 / 28
    assert precision_at_5 >= 0.8 > chance + 0.5
    # a time range of a project file: the windows whose middle lies inside, averaged
    ranged = ps.search(project, [f"{FINCH}@0-6"], top_n=3)
    assert set(ranged.file) == {FINCH}
    # an uploaded clip: 6 s cut from the finch recording, embedded through the model like the project
    audio, rate = sf.read(root / FINCH)
    clip = tmp_path / "query.wav"
    sf.write(clip, audio[3 * rate: 9 * rate], rate)
    uploaded = ps.search(project, [str(clip)], top_n=2)
    assert set(uploaded.window_index) == {1, 2} and set(uploaded.file) == {FINCH}
    one = tmp_path / "one_window.wav"
    sf.write(one, audio[3 * rate: 6 * rate], rate)
    same = ps.search(project, [str(one)], top_n=1)
    assert (same.file[0], same.window_index[0]) == (FINCH, 1) and same.similarity[0] > 0.99
    # filters: folder and date range (siteA holds great tit on 05-15 and zebra finch on 05-17)
    site_a = ps.search(project, [f"{FINCH}#0"], top_n=5, folders=["rec/siteA"])
    assert len(site_a) == 5 and set(site_a.folder) == {"rec/siteA"}
    day = ps.search(project, [f"{FINCH}#0"], top_n=50, date_from="2024-05-17", date_to="2024-05-17")
    assert set(day.file) == {"siteA/20240517_090000.wav"} and len(day) == 5


def test_index_grows_with_the_project_without_rebuilding(tiled, tmp_path):
    project = tmp_path / "grow"
    shutil.copytree(tiled[0], project)
    index = ps.sync_index(project)
    first = index.count
    head = (project / "search").glob("*/vectors.f16").__next__().read_bytes()
    extra = tmp_path / "more" / "siteC"
    extra.mkdir(parents=True)
    shutil.copyfile(tiled[1] / FINCH, extra / "20240601_050000.wav")
    analyse_project([extra.parent], project, RunSettings("birdnet_v2_4"), engine="inline")
    grown = ps.sync_index(project)
    assert grown.count == first + 8
    ledger = json.loads(next((project / "search").glob("*/parts.json")).read_text())
    assert len(ledger["parts"]) == 2 and ledger["count"] == grown.count
    assert next((project / "search").glob("*/vectors.f16")).read_bytes()[: len(head)] == head  # appended only
    found = ps.search(project, [f"{FINCH}#3"], top_n=2)
    assert set(found.file) == {FINCH, "siteC/20240601_050000.wav"}  # the copy is its twin


def test_label_train_apply_save_reload_and_predict(project, tiled, tmp_path):
    _root, truth = tiled[1], tiled[2]
    found = ps.search(project, [f"{FINCH}#0"], top_n=28)
    is_finch = np.array([_taxon(truth, f, w) == "Lonchura striata domestica" for f, w in zip(found.file, found.window_index)])
    positives, negatives = found[is_finch].head(4), found[~is_finch].head(6)
    assert ps.add_labels(project, positives, "bengalese", "positive", "search") == 4
    ps.add_labels(project, negatives, "bengalese", "negative", "search")
    ps.add_labels(project, found[~is_finch].tail(1), "bengalese", "unsure", "review")
    stored = ps.labels(project)
    assert sorted(stored.label.value_counts().items()) == [("negative", 6), ("positive", 4), ("unsure", 1)]
    assert set(stored.source) == {"search", "review"} and (stored.window_index >= 0).all()
    ps.add_labels(project, negatives.head(1), "bengalese", "positive", "search")  # a changed mind replaces
    assert (ps.labels(project).label == "positive").sum() == 5
    ps.add_labels(project, negatives.head(1), "bengalese", "negative", "search")

    classifier = ps.train_project_classifier(project, random_negatives=4)
    assert classifier.card.backbone == "birdnet_v2_4" and classifier.card.positives == {"bengalese": 4}
    assert classifier.card.negatives == 10 and "average_precision" in classifier.card.metrics["bengalese"]
    ranked, scores = ps.apply_classifier(project, classifier, top_n=28)
    assert len(scores) == 29
    ranked_taxa = [_taxon(truth, f, w) for f, w in zip(ranked.file, ranked.window_index)]
    assert all(t == "Lonchura striata domestica" for t in ranked_taxa[:8])  # every finch window first
    assert (ranked.label[ranked.window_index.isin(positives.window_index) & (ranked.file == FINCH)] == "positive").all()
    nxt = ps.suggest_to_label(project, classifier, n=3)
    labelled = set(zip(ps.labels(project).file, ps.labels(project).window_index))
    assert len(nxt) == 6 and not labelled & set(zip(nxt.file, nxt.window_index))
    assert list(nxt.why) == ["top unlabelled"] * 3 + ["uncertain"] * 3

    weights, _card = classifier.save(tmp_path / "bengalese")
    again = CustomClassifier.load(weights)
    np.testing.assert_allclose(ps.apply_classifier(project, again, top_n=5)[1], scores, atol=1e-6)
    # the saved classifier on a fresh recording, beside BirdNET's own species
    out = tmp_path / "pred.csv"
    result = run_cli("predict", "birdnet_v2_4", str(tiled[1] / FINCH), str(tiled[1] / GREAT_TIT), "--top-k", "1",
                     "--classifier", str(weights), "--csv", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    custom = table[table.scientific_name == "bengalese"]
    assert len(custom) == 16 and (custom.common_name == "your classifier: bengalese").all()
    assert custom[custom.file == Path(FINCH).name].score.min() > 0.5 > custom[custom.file == Path(GREAT_TIT).name].score.max()
    assert len(table[table.scientific_name != "bengalese"]) == 16  # BirdNET's top-1 of each window is still there


def test_review_queue_calibration_and_calibrated_export_threshold(project, tiled):
    truth = tiled[2]
    queue = ps.review_queue(project, species="Parus major", n=200, order="score")
    assert np.all(np.diff(queue.score) <= 0) and "label" in queue.columns
    verdicts = ["positive" if _taxon(truth, f, w) == "Parus major" else "negative"
                for f, w in zip(queue.file, queue.window_index)]
    for verdict in ("positive", "negative"):
        rows = queue[[v == verdict for v in verdicts]]
        ps.add_labels(project, rows, "Parus major", verdict, "review")
    calibration, bins = ps.calibrate_species(project, "Parus major", target_precision=0.9)
    assert calibration.verified == len(queue) and bins.verified.sum() == len(queue)
    assert calibration.correct == sum(v == "positive" for v in verdicts)
    spread = ps.review_queue(project, species="Parus major", n=6, order="bins")
    assert len(spread) == 6 and spread.label.notna().all()  # each already has its verdict
    saved = ps.species_thresholds(project)
    if calibration.threshold is None:
        assert saved == {} and calibration.note
    else:
        assert saved == {"Parus major": pytest.approx(calibration.threshold)}
        flt = ps.calibrated_filter(DetectionFilter(min_conf=0.25), project)
        assert dict(flt.species_min_conf) == saved
    # a per-species threshold replaces min_conf for that species only
    frame = pd.DataFrame({"file": "a.wav", "start_s": [0.0, 3.0, 6.0], "end_s": [3.0, 6.0, 9.0],
                          "scientific_name": ["Parus major", "Parus major", "Turdus merula"],
                          "common_name": "", "score": [0.5, 0.8, 0.3]})
    kept = DetectionFilter(min_conf=0.25, species_min_conf={"Parus major": 0.7}).apply(frame)
    assert list(zip(kept.scientific_name, kept.start_s)) == [("Parus major", 3.0), ("Turdus merula", 6.0)]


def test_bad_inputs_are_clear(project, tiled, tmp_path, great_tits):
    with pytest.raises(ConfigError, match=r"2\.48 s long, shorter than one 3-s window of birdnet_v2_4"):
        ps.search(project, [str(great_tits[0].path)])
    with pytest.raises(ConfigError, match="shorter than one 3-s window"):
        ps.search(project, [f"{FINCH}@1-2.5"])
    with pytest.raises(ConfigError, match="not a file of this project"):
        ps.search(project, ["nowhere.wav@0-3"])
    with pytest.raises(ConfigError, match="'from' date '15/05/24x' is not a date"):
        ps.search(project, [f"{FINCH}#0"], date_from="15/05/24x")
    with pytest.raises(ConfigError, match="no labels yet"):
        ps.train_project_classifier(project)
    ps.add_labels(project, [{"file_id": ps.search(project, [f"{FINCH}#0"], 1).file_id[0], "window_index": 0}],
                  "x", "negative")
    with pytest.raises(ConfigError, match="no positive labels"):
        ps.train_project_classifier(project)
    with pytest.raises(ConfigError, match="unknown verdict"):
        ps.add_labels(project, [{"file_id": 1, "window_index": 0}], "x", "maybe")
    # a classifier of another backbone
    vectors = np.random.default_rng(0).normal(size=(8, 1024)).astype(np.float32)
    from rl_core.custom_classifier import train_classifier

    other = train_classifier(vectors, ["c"] * 4 + ["negative"] * 4, "esp_aves2_sl_beats_all")
    with pytest.raises(ConfigError, match="trained on esp_aves2_sl_beats_all embeddings"):
        ps.apply_classifier(project, other)
    other.save(tmp_path / "other")
    result = run_cli("predict", "birdnet_v2_4", str(tiled[1] / FINCH), "--classifier", str(tmp_path / "other.yaml"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "trained on esp_aves2_sl_beats_all embeddings" in result.stderr and "Traceback" not in result.stderr
    # a project without embeddings
    bare = tmp_path / "bare"
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copyfile(tiled[1] / "siteA/20240517_090000.wav", folder / "z.wav")
    analyse_project([folder], bare, RunSettings("birdnet_v2_4", embeddings=False), engine="inline")
    with pytest.raises(ConfigError, match="no stored embeddings .* without --no-embeddings"):
        ps.search(bare, ["z.wav#0"])
    result = run_cli("search", "--project", str(bare), "z.wav#0")
    assert result.returncode == 2 and "no stored embeddings" in result.stderr and "Traceback" not in result.stderr


def test_cli_search_label_train_classify(project, tiled, tmp_path):
    out = tmp_path / "hits.csv"
    result = run_cli("search", "--project", str(project), f"{FINCH}#0", f"{FINCH}#1", "--top", "5", "--csv", str(out))
    assert result.returncode == 0, result.stderr
    hits = pd.read_csv(out)
    assert list(hits.columns) == ["file", "start_s", "end_s", "similarity"] and len(hits) == 5
    assert set(hits.file) == {FINCH} and hits.similarity.is_monotonic_decreasing
    windows = [f"{FINCH}#{i}" for i in range(4)]
    assert run_cli("label", *windows, "--project", str(project), "--class", "bf", "--verdict", "positive").returncode == 0
    negatives = [f"{GREAT_TIT}#{i}" for i in range(2)] + [f"siteA/20240517_090000.wav#{i}" for i in range(2)]
    result = run_cli("label", *negatives, "--project", str(project), "--class", "bf", "--verdict", "negative")
    assert result.returncode == 0 and "stored 4 negative label(s) for 'bf'" in result.stderr
    result = run_cli("train-classifier", "--project", str(project), "--out", str(tmp_path / "bf"),
                     "--random-negatives", "6")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bf.safetensors").is_file() and "bf" in (tmp_path / "bf.yaml").read_text()
    result = run_cli("classify", "--project", str(project), "--classifier", str(tmp_path / "bf.safetensors"),
                     "--top", "8")
    assert result.returncode == 0, result.stderr
    ranked = pd.read_csv(__import__("io").StringIO(result.stdout))
    assert (ranked.file == FINCH).sum() >= 7 and ranked.score.is_monotonic_decreasing
    # analyse --classifier: a new project's windows scored by the saved classifier too
    fresh = tmp_path / "fresh"
    result = run_cli("analyse", str(tiled[1] / "siteB"), "--project", str(fresh), "--classifier",
                     str(tmp_path / "bf.safetensors"), "--quiet", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "classifier bf:" in result.stderr and "custom_scores" in result.stderr
    with ProjectStore(fresh, read_only=True) as store:
        custom = store.con.execute("select f.rel_path, count(*) from custom_scores c join files f using (file_id) "
                                   "group by 1").fetchall()
    assert dict(custom).get("20240516_080000.wav", 0) >= 7  # paths relative to the analysed folder
    result = run_cli("label", "nowhere.wav#0", "--project", str(project), "--class", "bf", "--verdict", "positive")
    assert result.returncode == 2 and "not a file of this project" in result.stderr
    with ProjectStore(project, read_only=True) as store:
        assert store.con.execute("select count(*) from labels").fetchone()[0] == 8
