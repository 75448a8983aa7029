"""The web app's handler functions, called directly with real recordings and BirdNET V2.4 (offline)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ui import common, embedding_map, inference, inference_downloads, inference_figure, inference_view, zoo
from ui.common import UserFacingError

MODEL = "birdnet_v2_4"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def default_limits():
    saved = (common.SETTINGS.max_files, common.SETTINGS.max_total_mb, common.SETTINGS.max_file_size_mb)
    yield
    common.configure(max_files=saved[0], max_total_mb=saved[1], max_file_size_mb=saved[2])


@pytest.fixture
def broken_wav(tmp_path) -> Path:
    path = tmp_path / "broken_recording.wav"
    path.write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage that is not audio" * 3)
    return path


# --------------------------------------------------------------------------- zoo
def test_zoo_lists_birdnet_with_its_facts():
    table = zoo.zoo_table()
    assert list(table.columns) == zoo.COLUMNS
    row = table[table["Model"] == MODEL].iloc[0]
    assert row["Family"] == "BirdNET"
    assert row["Sample rate (Hz)"] == 48000
    assert row["Window (s)"] == 3
    assert row["Embedding dim"] == 1024
    assert row["Classes"] == 6522
    assert "CC BY-NC-SA" in row["Licence"]
    assert row["Weights"] == "bundled (runs offline)"


def test_zoo_search_and_family_filter():
    assert MODEL in set(zoo.zoo_table("birdnet")["Model"])
    assert MODEL in set(zoo.zoo_table("", "BirdNET")["Model"])
    assert zoo.zoo_table("no-such-model-xyz").empty
    assert "BirdNET" in zoo.families()


def test_zoo_card_and_snippet():
    card, snippet = zoo.model_card(MODEL)
    assert "### birdnet_v2_4" in card and "6522 classes" in card and "48000 Hz" in card
    assert 'load_model("birdnet_v2_4"' in snippet
    compile(snippet, "snippet", "exec")  # the copyable snippet is valid Python


def test_weight_text_offline_download(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from rl_core import checkpoints

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing downloaded before
    monkeypatch.setattr(checkpoints, "_probe_answers", {})
    info = {"name": "esp_aves2_eat_all", "checkpoint_size_mb": 345.6}
    source = "huggingface.co/EarthSpeciesProject/esp-aves2-eat-all (esp-aves2-eat-all.safetensors)"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.weight_text(info) == f"unavailable offline (346 MB download from {source})"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(checkpoints, "_connects", lambda host, port: True)  # the hub answers
    assert zoo.weight_text(info) == f"downloads on first use (346 MB from {source})"
    assert zoo.weight_text({**info, "checkpoint_size_mb": None}) == f"downloads on first use (from {source})"


def test_model_absent_offline_is_refused_before_the_model_slot(monkeypatch, tmp_path, great_tits):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    verdicts = common.model_validator(2)([str(great_tits[0].path)], "", "esp_aves2_eat_all", 3)
    assert [v["is_valid"] for v in verdicts] == [True, True, False, True]
    assert verdicts[2]["message"].startswith("the weights of model 'esp_aves2_eat_all' are not on this machine")
    assert common.model_validator(2)([], "", MODEL, 3)[2]["is_valid"]  # bundled: accepted
    assert common.model_validator(2)([], "", "", 3)[2]["is_valid"]  # empty: the handler says what to do
    with pytest.raises(UserFacingError, match="the weights of model 'esp_aves2_eat_all' are not on this machine "
                                              ".*huggingface-cli download.*choose a model marked 'ready'"):
        inference_view.analyse([str(great_tits[0].path)], "esp_aves2_eat_all", 3)
    assert time.monotonic() - start < 3


# --------------------------------------------------------------------------- inference
def _shown(files, options=None, **kwargs):
    options = options or inference_view.Options()
    run = inference_view.analyse(files, MODEL, options=options, **kwargs)
    return run, inference_view.render(run, options)


def test_analyse_real_recordings_and_a_broken_file(great_tits, storm_petrels, broken_wav):
    seen = []
    run, shown = _shown([str(great_tits[0].path), str(broken_wav), str(storm_petrels[0])], top_k=3,
                        progress=lambda fraction, message: seen.append(fraction))
    assert list(shown.files) == [great_tits[0].path.name, storm_petrels[0].name]
    assert len(shown.errors) == 1 and "broken_recording.wav" in shown.errors[0]
    assert "broken_recording.wav" in shown.message and "could not be analysed" in shown.message
    assert "/tmp" not in shown.message  # named by its upload name, not a server path
    tit = shown.files[great_tits[0].path.name]
    assert tit.species.iloc[0]["scientific name"] == "Parus major"
    assert tit.species.iloc[0]["common name"] == "Great Tit"
    petrel = shown.files[storm_petrels[0].name]
    assert petrel.species.iloc[0]["scientific name"] == "Hydrobates pelagicus"
    assert petrel.species.iloc[0]["max score"] > 0.9
    assert petrel.timeline_edges == pytest.approx([0.0, 3.0, 6.0, 9.0, 12.0, 14.0], abs=0.01)  # 14-s file
    assert petrel.timeline_labels[0] == "European Storm-Petrel (Hydrobates pelagicus)"
    assert petrel.timeline_scores.shape == (len(petrel.timeline_labels), 5)
    assert petrel.timeline_scores.max(axis=1).min() >= inference_view.DISPLAY_FLOOR  # no rows of zeros
    assert seen and max(seen) == pytest.approx(1.0)
    assert shown.summary["top species"].tolist() == ["Great Tit (Parus major)",
                                                     "European Storm-Petrel (Hydrobates pelagicus)"]

    downloads = inference_downloads.write_exports(run, inference_view.Options())
    names = [Path(p).name for p in downloads]
    assert names == ["predictions.csv", f"{great_tits[0].path.stem}.selections.txt",
                     f"{great_tits[0].path.stem}.labels.txt", f"{storm_petrels[0].stem}.selections.txt",
                     f"{storm_petrels[0].stem}.labels.txt", "embeddings.npz", "settings.json"]
    text = Path(downloads[0]).read_text()
    assert "# min_conf: 0.25\n" in text and "# model: birdnet_v2_4\n" in text  # the settings head every export
    predictions = pd.read_csv(downloads[0], comment="#")
    assert list(predictions.columns) == ["file", "start_s", "end_s", "rank", "scientific_name", "common_name", "score"]
    assert predictions["score"].min() >= 0.25  # the minimum confidence the page shows, nothing hidden
    raven = Path(downloads[3]).read_text()
    assert raven.splitlines()[0].split("\t")[:5] == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)"]
    assert "Hydrobates pelagicus" in raven
    labels = Path(downloads[4]).read_text().splitlines()
    start, end, label, score = labels[0].split("\t")  # BirdNET-Analyzer's Audacity form, as projects write it
    assert (float(start), float(end)) == (0.0, 3.0) and label == "Hydrobates pelagicus, European Storm-Petrel"
    assert float(score) > 0.99
    npz = np.load(downloads[5])
    assert npz["embeddings"].shape == (6, 1024) and npz["embeddings"].dtype == np.float32
    settings = json.loads(Path(downloads[6]).read_text())
    assert settings["min_conf"] == 0.25 and settings["sensitivity"] == 1.0 and settings["latitude"] is None


def test_minimum_confidence_fades_or_hides_weak_rows(storm_petrels):
    run, shown = _shown([str(storm_petrels[0])], top_k=5)
    rows = shown.files[storm_petrels[0].name]
    names = rows.species["scientific name"].tolist()
    assert names[:2] == ["Hydrobates pelagicus", "Laterallus jamaicensis"]  # Black Rail at ~0.4
    assert rows.weak[:2] == [False, False] and all(rows.weak[2:])  # the rest score under 0.25: faded
    stricter = inference_view.render(run, inference_view.Options(min_conf=0.5))
    assert stricter.files[storm_petrels[0].name].weak[:2] == [False, True]
    hidden = inference_view.render(run, inference_view.Options(min_conf=0.5, below="hide")).files[storm_petrels[0].name]
    assert hidden.species["scientific name"].tolist() == ["Hydrobates pelagicus"]
    assert hidden.timeline_labels == ["European Storm-Petrel (Hydrobates pelagicus)"]
    styled = inference_view.styled_species(stricter.files[storm_petrels[0].name])
    styled_rows = {row for (row, _col), props in styled._compute().ctx.items() if ("color", "#9ca3af") in props}
    assert styled_rows == {1, 2, 3, 4} and "1.000" in styled.to_html()  # grey rows; 3 decimals


def test_location_and_week_remove_out_of_range_species(great_tits):
    run, europe = _shown([str(great_tits[0].path)], inference_view.Options(lat=52.5, lon=13.4, date="2026-05-12"))
    name = great_tits[0].path.name
    assert europe.files[name].species.iloc[0]["scientific name"] == "Parus major"
    assert europe.files[name].removed.empty
    ithaca = inference_view.render(run, inference_view.Options(lat=42.45, lon=-76.48, date="2026-05-12"))
    view = ithaca.files[name]
    assert "Parus major" not in view.species["scientific name"].tolist()  # no great tits in New York
    assert view.removed["scientific name"].tolist()[0] == "Parus major"
    assert view.removed["occurrence here"].iloc[0] < 0.03 and view.removed["max score"].iloc[0] > 0.9
    ithaca_options = inference_view.Options(lat=42.45, lon=-76.48, date="2026-05-12")
    settings = json.loads(Path(inference_downloads.write_exports(run, ithaca_options)[-1]).read_text())
    assert (settings["latitude"], settings["longitude"], settings["week"]) == (42.45, -76.48, 18)
    with pytest.raises(UserFacingError, match="latitude '42,x' is not a number"):
        inference_view.options_from_inputs(lat="42,x", lon="1")
    with pytest.raises(UserFacingError, match="both latitude and longitude"):
        inference_view.render(run, inference_view.Options(lat=42.0))


def test_language_sensitivity_and_species_list(storm_petrels, tmp_path):
    run, german = _shown([str(storm_petrels[0])], inference_view.Options(language="de"))
    petrel = german.files[storm_petrels[0].name]
    assert petrel.species.iloc[0]["common name"] == "Sturmwellenläufer"
    assert petrel.timeline_labels[0] == "Sturmwellenläufer (Hydrobates pelagicus)"
    plain = inference_view.render(run, inference_view.Options()).files[storm_petrels[0].name].species
    keen = inference_view.render(run, inference_view.Options(sensitivity=1.5)).files[storm_petrels[0].name].species
    rail = lambda t: float(t.loc[t["scientific name"] == "Laterallus jamaicensis", "max score"].iloc[0])  # noqa: E731
    assert rail(keen) > rail(plain) + 0.3  # +5 on the logit, as BirdNET-Analyzer's sensitivity 1.5
    only = tmp_path / "my_species.txt"
    only.write_text("# pelagic birds\nHydrobates pelagicus_European Storm-Petrel\n")
    listed = inference_view.render(run, inference_view.Options(species_list=str(only))).files[storm_petrels[0].name]
    assert listed.species["scientific name"].tolist() == ["Hydrobates pelagicus"]
    wrong = tmp_path / "typo.txt"
    wrong.write_text("Hydrobates pelagicuss\n")
    with pytest.raises(Exception, match="did you mean 'Hydrobates pelagicus'"):
        inference_view.render(run, inference_view.Options(species_list=str(wrong)))


def test_overlap_shortens_the_hop(storm_petrels):
    run, shown = _shown([str(storm_petrels[0])], inference_view.Options(overlap_s=1.5))
    assert run.hop_s == 1.5
    edges = shown.files[storm_petrels[0].name].timeline_edges
    assert edges[:4] == pytest.approx([0.0, 1.5, 3.0, 4.5])
    with pytest.raises(UserFacingError, match="below the model's 3-s window"):
        inference_view.analyse([str(storm_petrels[0])], MODEL, options=inference_view.Options(overlap_s=3.0))


def test_non_species_classes_are_named_as_such():
    from rl_core.inference import RecordingResult

    scores = np.array([[0.9, 0.1, 0.6], [0.2, 0.05, 0.7]], dtype=np.float32)
    result = RecordingResult("yard.wav", None, 6.0, 48000, np.array([0.0, 3.0]), np.array([3.0, 6.0]), scores, None,
                             ["Dog", "Parus major", "Engine"], ["Dog", "Great Tit", "Engine"])
    table = inference_view.species_table(result, 3)
    assert table["scientific name"].tolist() == ["(non-species sound)", "(non-species sound)", "Parus major"]
    assert result.timeline(2).labels == ["Dog (non-species sound)", "Engine (non-species sound)"]


def test_unavailable_model_fails_at_once_without_url(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    label = dict((key, text) for text, key in common.model_choices())
    assert label["birdnet_v2_4"] == "birdnet_v2_4 · species names · ready"
    assert label["esp_aves2_eat_all"].endswith("embeddings only (no species names) · needs a download (not possible offline)")
    t0 = time.perf_counter()
    with pytest.raises(UserFacingError) as err:
        inference_view.analyse(None, "esp_aves2_sl_beats_all", example="great_tit_SW83.wav")
    assert time.perf_counter() - t0 < 2.0
    message = str(err.value)
    assert "cannot be downloaded now" in message and "://" not in message and "/root" not in message
    status, *rest = inference.on_run(None, "great_tit_SW83.wav", "esp_aves2_sl_beats_all", 3)
    assert status.startswith("⚠️") and "://" not in status
    assert all(type(r).__name__ == "skip" or r == {"__type__": "update"} for r in rest)  # panels keep content


def test_long_file_listen_anywhere(tmp_path, great_tits):
    # 5 minutes: a great-tit song every 20 s over quiet noise
    song, sr = sf.read(great_tits[0].path, dtype="float32")
    audio = np.random.default_rng(0).normal(0, 0.002, 300 * sr).astype(np.float32)
    for start in range(0, 298 * sr, 20 * sr):
        audio[start:start + len(song)] += song
    path = tmp_path / "five_minutes.flac"
    sf.write(path, audio, sr)
    updates = []
    run, shown = _shown([str(path)], top_k=1, progress=lambda f, m: updates.append((f, m)))
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions) and len({round(f, 3) for f in fractions if 0 < f < 1}) >= 5
    view = shown.files["five_minutes.flac"]
    assert view.species.iloc[0]["scientific name"] == "Parus major" and len(view.timeline_edges) == 101
    heard = inference_figure.listen(run, "five_minutes.flac", view, 240.0, 270.0, inference_view.Options())
    assert sf.info(heard.audio).duration == pytest.approx(30.0, abs=0.01)
    played, _ = sf.read(heard.audio, dtype="float32")
    assert np.abs(played - audio[240 * sr:270 * sr]).max() < 1e-3  # minute 4, not the first minute
    layout = heard.figure.layout
    assert tuple(layout.xaxis.range) == (240.0, 270.0) and layout.images[0].x == 240.0
    assert layout.images[0].sizex == 30.0 and layout.yaxis.range[1] == pytest.approx(sr / 2000)
    assert heard.figure.data[-1].type == "heatmap" and heard.figure.data[-1].x[-1] == pytest.approx(300.0)


def test_clips_zip_of_detections(storm_petrels):
    run, shown = _shown([str(storm_petrels[0])])
    options = inference_view.Options(min_conf=0.3)
    path = inference_figure.clips_zip(run, storm_petrels[0].name, options)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "settings.txt" in names and "# min_conf: 0.3" in archive.read("settings.txt").decode()
        wavs = sorted(n for n in names if n.endswith(".wav"))
        assert len(wavs) == 6  # five petrel windows and the black rail
        first = f"European_Storm-Petrel_Hydrobates_pelagicus_{storm_petrels[0].stem}_0003.0s.wav"
        assert first in wavs
        with archive.open(first) as handle:
            info = sf.info(handle)
        assert info.duration == pytest.approx(3.0 + 2 * inference_view.CONTEXT_S, abs=0.01)
    with pytest.raises(UserFacingError, match="lower the minimum confidence"):
        # no storm-petrels in New York in May, and the black rail scores under 0.5
        inference_figure.clips_zip(run, storm_petrels[0].name,
                                   inference_view.Options(min_conf=0.5, lat=42.45, lon=-76.48, date="2026-05-12"))


def test_clips_of_the_ticked_detections_only(storm_petrels):
    """Issue 12 #2: the user ticks the detections whose clips they want (all are ticked at first)."""
    run, shown = _shown([str(storm_petrels[0])])
    name, options = storm_petrels[0].name, inference_view.Options(min_conf=0.3)
    choices = inference_figure.clip_choices(run, name, options)
    assert list(choices.columns) == ["clip", "species", "at (s)", "score"] and choices["clip"].all()
    assert len(choices) == 6 and choices["score"].is_monotonic_decreasing
    rail = choices["species"].str.contains("Laterallus jamaicensis")
    assert rail.sum() == 1
    # untick the rail and two petrel windows, as the page sends the table back (booleans as text)
    chosen = choices.astype({"clip": object})
    chosen.loc[rail, "clip"] = False
    chosen.loc[chosen.index[~rail][:2], "clip"] = "false"
    kept = chosen[chosen["clip"].astype(str) == "True"]
    update, note = inference.on_clips({"run": run.id, "file": name}, chosen, 0.3, 1.0, "", "", "", 0.03, None, "en",
                                      "fade")
    assert note == "" and len(kept) == 3
    with zipfile.ZipFile(update["value"]) as archive:
        wavs = sorted(n for n in archive.namelist() if n.endswith(".wav"))
    expected = sorted(f"{species.replace(' (', '_').replace(' ', '_').rstrip(')')}_{storm_petrels[0].stem}_"
                      f"{start:06.1f}s.wav" for species, start in zip(kept["species"], kept["at (s)"]))
    assert wavs == expected and not any("Laterallus" in w for w in wavs)
    # nothing ticked: a one-line message, no zip
    chosen["clip"] = False
    update, note = inference.on_clips({"run": run.id, "file": name}, chosen, 0.3, 1.0, "", "", "", 0.03, None, "en",
                                      "fade")
    assert note == "⚠️ tick at least one detection in the clips table to export its clip"


def test_ultrasonic_recording_gets_time_expanded_audio(vocalpy_dir):
    run, shown = _shown([str(vocalpy_dir / "BM003.wav")], top_k=2)  # mouse vocalisation at 300 kHz
    view = shown.files["BM003.wav"]
    heard = inference_figure.listen(run, "BM003.wav", view, 0.0, 30.0, inference_view.Options())
    assert "slowed 10x" in heard.caption
    assert sf.info(heard.audio).samplerate == 30000
    assert sf.info(heard.audio).duration == pytest.approx(0.4 * 10, rel=0.01)
    assert heard.figure.layout.yaxis.range[1] == pytest.approx(150.0)  # the whole band, in kHz


def test_spectrogram_keeps_the_ultrasonic_band(vocalpy_dir):
    from ui.spectrogram import read_preview, spectrogram_db

    audio, sr = read_preview(vocalpy_dir / "BM003.wav")
    assert sr == 300000

    db, hop_s = spectrogram_db(audio, sr)
    freqs = np.linspace(0, sr / 2, db.shape[0])
    # the calls sit around 60-90 kHz: their loudest bins stand well above anything at 10-20 kHz
    assert np.percentile(db[(freqs > 60e3) & (freqs < 90e3)], 99.5) > db[(freqs > 10e3) & (freqs < 20e3)].max() + 6


def test_analyse_example_and_input_errors():
    run, shown = _shown(None, top_k=1, example="great_tit_SW83.wav")
    assert shown.files["great_tit_SW83.wav"].species.iloc[0]["scientific name"] == "Parus major"
    with pytest.raises(UserFacingError, match="add one or more recordings"):
        inference_view.analyse([], MODEL)
    with pytest.raises(UserFacingError, match="unknown example"):
        inference_view.analyse(None, MODEL, example="nope.wav")
    with pytest.raises(UserFacingError, match="species per file"):
        inference_view.analyse(None, MODEL, top_k=0, example="great_tit_SW83.wav")
    with pytest.raises(UserFacingError, match="unknown model"):
        inference_view.analyse(None, "no_such_model", example="great_tit_SW83.wav")


def test_only_broken_files_reports_each(tmp_path, broken_wav):
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    run, shown = _shown([str(broken_wav), str(empty)])
    assert shown.files == {} and inference_downloads.write_exports(run, inference_view.Options()) == []
    assert len(shown.errors) == 2
    assert "broken_recording.wav" in shown.errors[0] and "empty.flac" in shown.errors[1]


def test_file_size_limit_is_enforced(great_tits):
    common.configure(max_file_size_mb=0.01)
    run, shown = _shown([str(great_tits[0].path)])
    assert "above this server's limit" in shown.errors[0] and "--max-file-size" in shown.errors[0]


# --------------------------------------------------------------------------- embedding map


@pytest.fixture
def tiny_layered_model():
    """A small registered architecture with two hookable layers (random weights), to test layer choice."""
    from collections import OrderedDict

    import torch
    from torch import nn

    import rl_core
    from rl_core import AudioConfig, ModelBase, ModelSpec, register_model, register_model_class

    @register_model_class
    class UiTinyLayers(ModelBase):
        name = "ui_tiny_layers_test"

        def __init__(self, device="cpu", num_classes=None, **kwargs):
            super().__init__(device=device, num_classes=num_classes, **kwargs)
            torch.manual_seed(0)
            self.first = nn.Linear(400, 6)
            self.second = nn.Linear(6, 4)

        def forward_features(self, x, padding_mask=None):
            return self.second(torch.relu(self.first(x.unfold(-1, 400, 160))))

        def get_embedding_dim(self):
            return 4

        def layer_modules(self):
            return OrderedDict(first=self.first, second=self.second)

    spec = ModelSpec(name="ui_tiny_layers_test", audio_config=AudioConfig(sample_rate=16000, target_length_seconds=1.0))
    register_model("ui_tiny_layers", rl_core.configs.ModelEntry(model_spec=spec, embedding_dim=4,
                                                                 random_weights=True, family="test"))
    yield "ui_tiny_layers"
    rl_core.registry.unregister_model("ui_tiny_layers")


def test_example_set_is_labelled():
    items = embedding_map.example_set()
    labels = {i.label for i in items}
    assert {"Great Tit B32", "Great Tit SW83", "Storm-Petrel", "Zebra Finch"} <= labels
    assert len(items) == 26 and all(i.path.exists() for i in items)


# --------------------------------------------------------------------------- common
def test_model_choices_put_birdnet_first_and_default():
    choices = common.model_choices()
    assert choices[0][1] == MODEL and "ready" in choices[0][0]
    assert common.default_model() == MODEL
    assert common.model_concurrency_id() == f"model-{common.SETTINGS.device}"


def test_configure_rejects_unknown_settings():
    with pytest.raises(TypeError, match="unknown setting"):
        common.configure(max_filez=3)


def test_example_assets_have_licences():
    text = (REPO / "assets" / "LICENSES.md").read_text()
    files = common.example_recordings()
    assert len(files) >= 4
    assert sum(p.stat().st_size for p in files) < 5e6
    for path in files:
        assert path.name in text


