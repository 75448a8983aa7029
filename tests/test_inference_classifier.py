"""A classifier saved by Find & train, applied in the inference tab (handlers, real BirdNET V2.4, offline)."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from classifier_fixture import CLASS, save_petrel_classifier
from test_ui_handlers import tiny_layered_model  # noqa: F401 - a fixture: a registered model without a head

from rl_core.custom_classifier import CustomClassifier, classifier_table
from ui import inference
from ui.inference_downloads import write_exports
from ui.inference_view import Options, analyse, render

MODEL = "birdnet_v2_4"
LABEL = "your classifier: petrel"


@pytest.fixture(scope="module")
def petrel_files(tmp_path_factory):
    return save_petrel_classifier(tmp_path_factory.mktemp("classifier"))


def test_classifier_rows_join_the_table_timeline_and_downloads(petrel_files, storm_petrels, great_tits):
    petrel, tit = storm_petrels[0], great_tits[0].path
    run = analyse([str(petrel), str(tit)], MODEL, top_k=3, classifier_files=[str(p) for p in petrel_files])
    shown = render(run, Options(min_conf=0.25))
    assert f"Your classifier **petrel** scored every window for {CLASS}" in shown.message
    petrel_view, tit_view = shown.files[petrel.name], shown.files[tit.name]
    mine = petrel_view.species[petrel_view.species["common name"] == LABEL]
    assert list(mine["scientific name"]) == [CLASS] and mine["max score"].iloc[0] > 0.9
    assert petrel_view.species["scientific name"].iloc[0] == "Hydrobates pelagicus"  # BirdNET's own rows stay first
    assert f"{LABEL} ({CLASS})" in petrel_view.timeline_labels
    row = petrel_view.timeline_labels.index(f"{LABEL} ({CLASS})")
    assert petrel_view.timeline_scores[row].max() > 0.9
    # the unseen great tit: the classifier's score stays low (faded below the minimum, or hidden)
    tit_rows = tit_view.species[tit_view.species["common name"] == LABEL]
    assert tit_rows.empty or tit_rows["max score"].max() < 0.25
    # downloads: the CLI's rows (`rl-core predict --classifier`), marked with their source
    downloads = write_exports(run, Options(min_conf=0.25))
    csv = next(p for p in downloads if p.endswith("predictions.csv"))
    table = pd.read_csv(csv, comment="#")
    custom = table[table.common_name == LABEL].reset_index(drop=True)
    classifier = CustomClassifier.load(petrel_files[0])
    expected = classifier_table(classifier, run.results[petrel.name], 0.25, "petrel")
    assert len(custom) == len(expected) > 0
    assert list(custom.start_s) == list(expected.start_s)
    assert custom.score.round(4).tolist() == expected.score.round(4).tolist()
    assert (table.common_name != LABEL).sum() > 0  # BirdNET's species are still there
    assert "# classifier: petrel (storm petrel)" in open(csv, encoding="utf-8").read()
    labels = next(p for p in downloads if p.endswith(f"{petrel.stem}.labels.txt"))
    assert f"{CLASS}, {LABEL}" in open(labels, encoding="utf-8").read()
    raven = pd.read_csv(next(p for p in downloads if p.endswith(f"{petrel.stem}.selections.txt")), sep="\t")
    mine = raven[raven["Common Name"] == LABEL]
    assert len(mine) == len(expected) and (raven["Common Name"] != LABEL).any()
    assert list(mine["Begin Time (s)"]) == list(expected.start_s) and raven["Begin Time (s)"].is_monotonic_increasing
    # clips: your classifier's detections can be ticked and exported too
    from ui.inference_figure import clip_choices, clips_zip

    choices = clip_choices(run, petrel.name, Options(min_conf=0.25))
    mine = choices[choices["species"] == f"{LABEL} ({CLASS})"]
    assert len(mine) == len(expected)
    chosen = choices.assign(clip=choices.index.isin(mine.index))
    with zipfile.ZipFile(clips_zip(run, petrel.name, Options(min_conf=0.25), chosen)) as archive:
        wavs = [n for n in archive.namelist() if n.endswith(".wav")]
    assert len(wavs) == len(expected) and all(w.startswith("your_classifier_petrel_storm_petrel_") for w in wavs)


def test_on_run_with_the_classifier_and_its_refusals(petrel_files, storm_petrels, tmp_path):
    weights, card = (str(p) for p in petrel_files)
    out = inference.on_run([str(storm_petrels[0])], "", MODEL, 3, classifier_files=[card, weights])
    assert out[0].startswith("Analysed 1 file(s)") and LABEL in out[3].data["common name"].tolist()
    # another backbone's classifier: one sentence, before any recording is analysed
    other = save_petrel_classifier(tmp_path, backbone="esp_aves2_sl_beats_all")
    status = inference.on_run([str(storm_petrels[0])], "", MODEL, 3, classifier_files=[str(p) for p in other])[0]
    assert status.startswith("⚠️ this classifier was trained on esp_aves2_sl_beats_all embeddings")
    assert "Use it with esp_aves2_sl_beats_all, or train a new one on birdnet_v2_4" in status
    assert status.count("\n") == 0 and "/" not in status.replace("esp_aves2", "")
    # half a classifier, a stray file, or a file that only has the right name
    status = inference.on_run([str(storm_petrels[0])], "", MODEL, 3, classifier_files=[weights])[0]
    assert status == ("⚠️ add both files of your classifier, NAME.safetensors and its card NAME.yaml, as Find & train "
                      "saved them (got 1 .safetensors and 0 .yaml)")
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    status = inference.on_run([str(storm_petrels[0])], "", MODEL, 3, classifier_files=[weights, str(stray)])[0]
    assert "notes.txt is not a classifier file" in status
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not tensors at all")
    shutil.copyfile(card, tmp_path / "fake.yaml")
    status = inference.on_run([str(storm_petrels[0])], "", MODEL, 3,
                              classifier_files=[str(fake), str(tmp_path / "fake.yaml")])[0]
    assert status.startswith("⚠️ fake.safetensors: not a safetensors classifier") and "\n" not in status


def test_a_model_without_species_head_shows_only_your_classifier(tiny_layered_model, great_tits, storm_petrels,
                                                                 tmp_path):
    from rl_core.cache import get_model
    from rl_core.custom_classifier import train_classifier
    from rl_core.inference import analyse_recording

    model = get_model(tiny_layered_model)
    calls = analyse_recording(model, great_tits[1].path, want_scores=False).embeddings
    others = analyse_recording(model, storm_petrels[1], want_scores=False).embeddings
    classifier = train_classifier(np.concatenate([calls, others]), ["tit"] * len(calls) + [""] * len(others),
                                  tiny_layered_model)
    files = [str(p) for p in classifier.save(tmp_path / "tits")]
    run = analyse([str(great_tits[0].path)], tiny_layered_model, top_k=3, classifier_files=files)
    shown = render(run, Options(min_conf=0.01))
    view = shown.files[great_tits[0].path.name]
    assert list(view.species["common name"]) == ["your classifier: tits"]
    assert view.timeline_labels == ["your classifier: tits (tit)"] and view.timeline_scores.shape[0] == 1
    assert shown.summary["top species"].iloc[0] == "your classifier: tits (tit)"
    downloads = write_exports(run, Options(min_conf=0.01))
    table = pd.read_csv(next(p for p in downloads if p.endswith("predictions.csv")), comment="#")
    assert set(table.common_name) == {"your classifier: tits"} and len(table) == run.results[
        great_tits[0].path.name].num_windows
    stem = great_tits[0].path.stem  # Raven and Audacity hold your classifier's rows too
    raven = pd.read_csv(next(p for p in downloads if p.endswith(f"{stem}.selections.txt")), sep="\t")
    assert set(raven["Common Name"]) == {"your classifier: tits"} and len(raven) == len(table)
    assert next(p for p in downloads if p.endswith(f"{stem}.labels.txt"))
