"""BirdNET-Analyzer's filters and names (rl_core.detection_filters) on real label files and real recordings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rl_core.birdnet_location import week_of
from rl_core.detection_filters import (
    NON_SPECIES_CLASSES,
    DetectionFilter,
    apply_sensitivity,
    available_languages,
    birdnet_species,
    common_name_map,
    common_names,
    flat_sigmoid,
    is_non_species,
    location_report,
    merge_consecutive,
    read_species_list,
    removed_by_location,
)
from rl_core.errors import ConfigError

ITHACA = dict(lat=42.44, lon=-76.50, week=week_of(5, 15))
OXFORD = dict(lat=51.75, lon=-1.26, week=week_of(4, 15))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p):
    return math.log(p / (1.0 - p))


def test_flat_sigmoid_matches_birdnet_analyzer_formula():
    # BirdNET-Analyzer 2.4.0: 1 / (1 + exp(-clip(x + (S - 1) * 10, -20, 20)))
    assert flat_sigmoid(np.array([0.0]), 1.0)[0] == pytest.approx(0.5)
    assert flat_sigmoid(np.array([0.0]), 1.5)[0] == pytest.approx(_sigmoid(5.0))  # 0.99331
    assert flat_sigmoid(np.array([2.0]), 0.5)[0] == pytest.approx(_sigmoid(-3.0))  # 0.04743
    assert flat_sigmoid(np.array([100.0]), 1.0)[0] == pytest.approx(_sigmoid(20.0))  # clipped at 20
    assert flat_sigmoid(np.array([-100.0]), 1.0)[0] == pytest.approx(_sigmoid(-20.0))


@pytest.mark.parametrize("p, s", [(0.25, 1.25), (0.1, 1.5), (0.9, 0.5), (0.6, 0.75), (0.02, 1.3)])
def test_sensitivity_goes_through_the_logit(p, s):
    expected = _sigmoid(_logit(p) + (s - 1.0) * 10.0)
    assert apply_sensitivity(np.array([p], dtype=np.float32), s)[0] == pytest.approx(expected, rel=1e-5)
    assert apply_sensitivity(np.array([0.25]), 1.25)[0] == pytest.approx(0.802404, abs=1e-6)  # logit -1.0986 + 2.5


def test_sensitivity_one_keeps_scores_and_bad_values_are_refused():
    scores = np.array([0.1, 0.5, 0.99], dtype=np.float32)
    assert apply_sensitivity(scores, 1.0) is scores
    with pytest.raises(ConfigError, match=r"sensitivity must be in \[0.5, 1.5\]"):
        apply_sensitivity(scores, 2.0)
    with pytest.raises(ConfigError, match="sensitivity"):
        DetectionFilter(sensitivity=0.2)


def test_location_filter_ithaca_may_and_oxford_april():
    ithaca = location_report(**ITHACA)
    kept = set(ithaca.loc[ithaca.kept, "scientific_name"])
    assert "Geothlypis trichas" in kept and "Parus major" not in kept
    assert 100 < len(kept - NON_SPECIES_CLASSES) < 200
    oxford = location_report(**OXFORD)
    kept = set(oxford.loc[oxford.kept, "scientific_name"])
    assert "Parus major" in kept and "Geothlypis trichas" not in kept
    # threshold is settable: a stricter threshold keeps fewer species
    strict = location_report(**OXFORD, threshold=0.3)
    assert strict.kept.sum() < oxford.kept.sum()
    removed = removed_by_location(**ITHACA, species=["Parus major", "Geothlypis trichas", "Turdus merula"])
    assert set(removed.scientific_name) == {"Parus major", "Turdus merula"}
    assert (removed.occurrence < 0.03).all()


def test_year_round_week_keeps_more_species():
    year = location_report(ITHACA["lat"], ITHACA["lon"], -1)
    may = location_report(**ITHACA)
    assert year.kept.sum() > may.kept.sum()


def test_non_species_classes_are_the_repeated_names_of_the_label_file():
    from rl_core.models.birdnet import LABELS_FILE, birdnet_dir

    lines = (birdnet_dir() / LABELS_FILE).read_text(encoding="utf-8").splitlines()
    repeated = {line.split("_")[0] for line in lines if line.split("_")[0] == line.split("_")[1]}
    assert repeated - {"Gryllus assimilis", "Miogryllus saussurei"} == NON_SPECIES_CLASSES
    assert is_non_species("Dog") and is_non_species("Human vocal") and not is_non_species("Parus major")


def test_languages_and_german_names():
    languages = available_languages()
    assert len(languages) == 38 and languages[0] == "en"  # base English + 37 BirdNET-Analyzer label files
    assert {"de", "fr", "ja", "zh", "pt_BR", "en_uk"} <= set(languages)
    german = common_name_map("de")
    assert german["Parus major"] == "Kohlmeise"
    assert german["Turdus merula"] == "Amsel"
    assert german["Dog"] == "Hund"
    assert common_names("en")[birdnet_species().index("Parus major")] == "Great Tit"
    assert common_name_map("fr")["Parus major"] == "Mésange charbonnière"
    with pytest.raises(ConfigError, match="no BirdNET common names for language 'deu'"):
        common_names("deu")


def test_species_list_reader(tmp_path):
    good = tmp_path / "list.txt"
    good.write_text("# my site\nParus major\nTurdus merula_Eurasian Blackbird\n\nParus major_Great Tit\n", encoding="utf-8")
    assert read_species_list(good) == ["Parus major", "Turdus merula"]
    bad = tmp_path / "bad.txt"
    bad.write_text("Parus majr\nGreat Tit\nTurdus merula\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_species_list(bad)
    message = str(err.value)
    assert "line 1: unknown species 'Parus majr' (did you mean 'Parus major'" in message
    assert "line 2: unknown species 'Great Tit' (did you mean 'Parus major'?)" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="does not exist"):
        read_species_list(tmp_path / "missing.txt")


def _windows(rows):
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "scientific_name", "common_name", "score"])


def test_merge_consecutive_windows_like_birdnet_analyzer():
    frame = _windows([
        ("a.wav", 0.0, 3.0, "Parus major", "Great Tit", 0.9),
        ("a.wav", 3.0, 6.0, "Parus major", "Great Tit", 0.8),
        ("a.wav", 6.0, 9.0, "Parus major", "Great Tit", 0.7),
        ("a.wav", 9.0, 12.0, "Parus major", "Great Tit", 0.3),
        ("a.wav", 15.0, 18.0, "Parus major", "Great Tit", 0.5),
        ("a.wav", 3.0, 6.0, "Turdus merula", "Eurasian Blackbird", 0.6),
        ("b.wav", 18.0, 21.0, "Parus major", "Great Tit", 0.4),
    ])
    merged = merge_consecutive(frame, None).sort_values(["file", "scientific_name", "start_s"]).reset_index(drop=True)
    assert merged[["file", "start_s", "end_s", "scientific_name"]].values.tolist() == [
        ["a.wav", 0.0, 12.0, "Parus major"], ["a.wav", 15.0, 18.0, "Parus major"],
        ["a.wav", 3.0, 6.0, "Turdus merula"], ["b.wav", 18.0, 21.0, "Parus major"]]
    assert merged.score[0] == pytest.approx(0.8)  # mean of the top 3 of 0.9, 0.8, 0.7, 0.3
    assert merged.windows.tolist() == [4, 1, 1, 1]
    pairs = merge_consecutive(frame, 2)
    great_tit_a = pairs[(pairs.file == "a.wav") & (pairs.scientific_name == "Parus major")].sort_values("start_s")
    assert great_tit_a[["start_s", "end_s"]].values.tolist() == [[0.0, 6.0], [6.0, 12.0], [15.0, 18.0]]
    assert merge_consecutive(frame, 1).shape[0] == frame.shape[0]


def test_detection_filter_apply_on_constructed_windows():
    frame = _windows([
        ("a.wav", 0.0, 3.0, "Parus major", "Great Tit", 0.9),
        ("a.wav", 0.0, 3.0, "Geothlypis trichas", "Common Yellowthroat", 0.3),
        ("a.wav", 0.0, 3.0, "Dog", "Dog", 0.5),
        ("a.wav", 3.0, 6.0, "Turdus merula", "Eurasian Blackbird", 0.2),
    ])
    plain = DetectionFilter().apply(frame)
    assert plain.scientific_name.tolist() == ["Parus major", "Dog", "Geothlypis trichas"]  # 0.2 < 0.25
    assert plain.non_species.tolist() == [False, True, False]
    sensitive = DetectionFilter(sensitivity=1.25).apply(frame)
    assert "Turdus merula" in set(sensitive.scientific_name)  # 0.2 -> sigmoid(logit(0.2) + 2.5) = 0.7528
    assert sensitive.loc[sensitive.scientific_name == "Turdus merula", "score"].iloc[0] == pytest.approx(0.75282, abs=1e-5)
    ithaca = DetectionFilter(**ITHACA).apply(frame)
    assert ithaca.scientific_name.tolist() == ["Dog", "Geothlypis trichas"]
    assert DetectionFilter(**ITHACA, include_non_species=False).apply(frame).scientific_name.tolist() == ["Geothlypis trichas"]
    removed = DetectionFilter(**ITHACA).removed_by_location(frame)
    assert removed.scientific_name.tolist() == ["Parus major"] and removed.occurrence[0] < 0.03
    oxford = DetectionFilter(**OXFORD, language="de", species_list=("Parus major", "Turdus merula")).apply(frame)
    assert oxford[["scientific_name", "common_name"]].values.tolist() == [["Parus major", "Kohlmeise"]]


def test_detection_filter_errors():
    with pytest.raises(ConfigError, match="min_conf"):
        DetectionFilter(min_conf=1.5)
    with pytest.raises(ConfigError, match="both lat and lon"):
        DetectionFilter(lat=50.0)
    with pytest.raises(ConfigError, match="week must be 1-48"):
        DetectionFilter(lat=50.0, lon=0.0, week=60)
    with pytest.raises(ConfigError, match="language 'xx'"):
        DetectionFilter(language="xx")
    assert DetectionFilter(lat=50.0, lon=0.0).week == -1  # year-round, as BirdNET-Analyzer's week -1
    assert DetectionFilter(merge_consecutive=True).merge_consecutive is None


def test_filter_on_a_real_great_tit_recording(great_tits):
    from rl_core.cache import get_model
    from rl_core.inference import run_file

    result = run_file(get_model("birdnet_v2_4"), great_tits[0].path, want_embeddings=False)
    table = result.top_k_table(k=5, min_score=0.01)
    oxford = DetectionFilter(**OXFORD, language="de").apply(table)
    assert oxford.loc[oxford.score.idxmax(), "common_name"] == "Kohlmeise"
    ithaca = DetectionFilter(**ITHACA).apply(table)
    assert "Parus major" not in set(ithaca.scientific_name)
    merged = DetectionFilter(**OXFORD, merge_consecutive=None).apply(table)
    tits = merged[merged.scientific_name == "Parus major"]
    assert len(tits) < (oxford.scientific_name == "Parus major").sum() or len(tits) == 1
    mask = DetectionFilter(**OXFORD).class_mask(result.labels)
    assert mask.shape == (6522,) and mask[result.labels.index("Parus major")]
