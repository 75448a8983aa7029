"""The embedding-map handlers and the safety of uploads and output folders (zips, labels CSVs, disk bound),
called directly with real recordings and BirdNET V2.4 (offline)."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ui_handlers import MODEL, default_limits, tiny_layered_model  # noqa: F401  (fixtures; limits reset)

from ui import common, embedding_map
from ui.common import UserFacingError


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def test_map_from_files_and_labels_csv(great_tits, tmp_path):
    chosen = [r for r in great_tits if r.label == "B32"][:3] + [r for r in great_tits if r.label == "SW83"][:3]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{r.path.name},bird {r.label}\n" for r in chosen))
    result = embedding_map.build_map([str(r.path) for r in chosen], labels_csv=str(labels), model_name=MODEL,
                                     method="PCA")
    assert len(result.points) == 6 and not result.errors
    assert sorted(result.points["label"].unique()) == ["bird B32", "bird SW83"]
    assert np.isfinite(result.points[["x", "y"]].to_numpy()).all()
    # one scatter point per file, hover names the file
    assert sum(len(trace.x) for trace in result.figure.data) == 6
    assert "customdata[0]" in result.figure.data[0].hovertemplate
    coords = pd.read_csv(result.downloads[0])
    assert list(coords.columns) == ["file", "label", "x", "y"] and len(coords) == 6
    npz = np.load(result.downloads[1])
    assert npz["embeddings"].shape == (6, 1024) and npz["coordinates"].shape == (6, 2)
    # the two birds separate along the first principal component
    x = result.points.set_index("label")["x"]
    assert abs(x["bird B32"].mean() - x["bird SW83"].mean()) > 0.5 * result.points["x"].std()


def test_map_from_zip_labels_from_folders_with_umap_and_a_bad_file(great_tits, tmp_path):
    entries = {f"{r.label}/{r.path.name}": r.path.read_bytes() for r in great_tits[:3] + great_tits[-3:]}
    entries["SW83/broken.wav"] = b"not audio at all"
    entries["readme.txt"] = b"ignored: not audio"
    archive = _write_zip(tmp_path / "songs.zip", entries)
    result = embedding_map.build_map(zip_file=str(archive), model_name=MODEL, method="UMAP", n_neighbors=4)
    assert len(result.points) == 6
    assert set(result.points["label"]) == {"B32", "SW83"}
    assert len(result.errors) == 1 and "broken.wav" in result.errors[0]
    assert "left out" in result.message


@pytest.mark.parametrize("bad_name, reason", [("../evil.wav", "contains '..'"), ("/etc/evil.wav", "absolute path"),
                                              ("ok/../../evil.wav", "contains '..'"), ("C:\\evil.wav", "absolute")])
def test_zip_with_unsafe_paths_is_refused(tmp_path, bad_name, reason):
    archive = _write_zip(tmp_path / "bad.zip", {"a/fine.wav": b"x", bad_name: b"x"})
    with pytest.raises(UserFacingError, match=reason):
        embedding_map.extract_zip(archive, tmp_path)
    assert not (tmp_path.parent / "evil.wav").exists()


def test_zip_limits_file_count_and_uncompressed_size(tmp_path, great_tits):
    common.configure(max_files=2)
    archive = _write_zip(tmp_path / "many.zip", {f"a/{i}.wav": b"x" for i in range(3)})
    with pytest.raises(UserFacingError, match="at most 2"):
        embedding_map.extract_zip(archive, tmp_path)
    common.configure(max_files=500, max_total_mb=1.0)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/zeros.wav", b"\0" * 3_000_000)  # 3 MB unpacked, a few kB packed
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UserFacingError, match="unpacks to 3 MB"):
        embedding_map.extract_zip(bomb, tmp_path)
    assert not any(tmp_path.glob("*zeros.wav"))


def test_zip_that_is_not_a_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    with pytest.raises(UserFacingError, match="not a readable zip"):
        embedding_map.extract_zip(fake, tmp_path)


def test_labels_csv_without_header_and_errors(tmp_path):
    good = tmp_path / "l.csv"
    good.write_text("dir/a.wav,x\nb.wav,y\n")
    assert embedding_map.read_labels_csv(good) == {"a.wav": "x", "b.wav": "y"}
    bad = tmp_path / "bad.csv"
    bad.write_text("just one column\n")
    with pytest.raises(UserFacingError, match="no 'file,label' rows"):
        embedding_map.read_labels_csv(bad)


def test_map_layer_and_pooling_choices(tiny_layered_model, great_tits):
    assert embedding_map.layer_choices(tiny_layered_model) == ["last_layer", "first", "second"]
    files = [str(r.path) for r in great_tits[:3]]
    first = embedding_map.build_map(files, model_name=tiny_layered_model, layer="first", pooling="max", method="PCA")
    npz = np.load(first.downloads[1])
    assert npz["embeddings"].shape == (3, 6) and str(npz["layer"]) == "first" and str(npz["pooling"]) == "max"
    last = embedding_map.build_map(files, model_name=tiny_layered_model, layer="last_layer", method="PCA")
    assert np.load(last.downloads[1])["embeddings"].shape == (3, 4)
    with pytest.raises(UserFacingError, match="unknown layer 'third' for ui_tiny_layers; choose one of: last_layer, first"):
        embedding_map.build_map(files, model_name=tiny_layered_model, layer="third", method="PCA")


def test_map_needs_input_and_two_recordings(great_tits):
    with pytest.raises(UserFacingError, match="add recordings"):
        embedding_map.build_map(model_name=MODEL)
    with pytest.raises(UserFacingError, match="at least 2"):
        embedding_map.build_map([str(great_tits[0].path)], model_name=MODEL, method="PCA")


def test_map_coordinates_csv_escapes_formulas(tiny_layered_model, great_tits, tmp_path):
    """Issue 16 #8: file names and labels starting with =, +, -, @ reached the map CSV unescaped."""
    names = ["=HYPERLINK(1).wav", "+1.wav", "@SUM(A1).wav", "plain.wav"]
    files = []
    for name, recording in zip(names, great_tits):
        files.append(tmp_path / name)
        files[-1].write_bytes(recording.path.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n=HYPERLINK(1).wav,-2+3\n+1.wav,bird\n@SUM(A1).wav,@home\nplain.wav,bird\n")
    result = embedding_map.build_map([str(f) for f in files], labels_csv=str(labels), model_name=tiny_layered_model,
                                     method="PCA")
    assert sorted(result.points["file"]) == sorted(names)  # the page shows the names as uploaded
    coords = pd.read_csv(result.downloads[0], keep_default_na=False)
    assert dict(zip(coords["file"], coords["label"])) == {
        "'=HYPERLINK(1).wav": "'-2+3", "'+1.wav": "bird", "'@SUM(A1).wav": "'@home",
        "plain.wav": "bird"}


def _patched_zip(path: Path, first: bytes, second: bytes, kind: str) -> Path:
    """A stored zip of two entries, then damaged in place: 'encrypted' (password flag, as `zip -e` sets it),
    'ppmd' (compression method 98, which zipfile cannot unpack) or 'crc' (a flipped byte in the second entry)."""
    _write_zip(path, {"a/first.wav": first, "b/second.wav": second})
    raw = bytearray(path.read_bytes())
    local = [i for i in range(len(raw) - 4) if raw[i:i + 4] == b"PK\x03\x04"]
    central = [i for i in range(len(raw) - 4) if raw[i:i + 4] == b"PK\x01\x02"]
    if kind == "encrypted":
        raw[local[1] + 6] |= 1
        raw[central[1] + 8] |= 1
    elif kind == "ppmd":
        raw[local[1] + 8:local[1] + 10] = (98).to_bytes(2, "little")
        raw[central[1] + 10:central[1] + 12] = (98).to_bytes(2, "little")
    else:
        raw[local[1] + 30 + len("b/second.wav") + 1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("kind, message", [
    ("encrypted", "the zip songs.zip was refused: entry 'b/second.wav' is encrypted (password-protected); zip the "
                  "recordings again without a password"),
    ("ppmd", "the zip songs.zip was refused: entry 'b/second.wav' is compressed with ppmd, which this server "
             "cannot unpack; zip it again with the usual 'deflate' compression"),
    ("crc", "the zip songs.zip is damaged: entry 'b/second.wav' cannot be unpacked (its CRC check failed); copy or "
            "zip it again"),
])
def test_unreadable_zip_entries_are_named_and_nothing_stays(great_tits, tmp_path, kind, message):
    """Issue 16 #5: these came back as 'unexpected ...' with partly extracted files left on disk."""
    archive = _patched_zip(tmp_path / "songs.zip", great_tits[0].path.read_bytes(), great_tits[1].path.read_bytes(),
                           kind)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    with pytest.raises(UserFacingError) as error:
        embedding_map.extract_zip(archive, dest)
    assert str(error.value) == message
    assert list(dest.iterdir()) == []


def test_labels_csv_with_a_huge_field_is_named(tmp_path):
    """Issue 16 #5: a 5 MB field (above csv's field size limit) gave 'unexpected Error'."""
    huge = tmp_path / "labels.csv"
    huge.write_text("file,label\na.wav,bird\nb.wav," + "x" * 5_000_000 + "\n")
    with pytest.raises(UserFacingError, match=r"^the labels CSV labels.csv could not be read at line 3 \(field larger "
                                              r"than field limit \(131072\)\); it should hold 'file,label' rows$"):
        embedding_map.read_labels_csv(huge)


def test_unpacked_zip_is_removed_when_the_request_ends(great_tits, tmp_path, monkeypatch):
    """Issue 16 #2: every map request left its unpacked zip in its output folder for 6 hours."""
    root = tmp_path / "outputs"
    monkeypatch.setattr(common, "_OUTPUT_ROOT", root)
    entries = {f"{r.label}/{r.path.name}": r.path.read_bytes() for r in great_tits[:2] + great_tits[-2:]}
    result = embedding_map.build_map(zip_file=str(_write_zip(tmp_path / "songs.zip", entries)), model_name=MODEL,
                                     method="PCA")
    assert len(result.points) == 4
    assert [p.name for p in root.iterdir()] == [Path(result.downloads[0]).parent.name]  # downloads only
    assert sorted(p.name for p in Path(result.downloads[0]).parent.iterdir()) == ["map_coordinates.csv",
                                                                                 "map_embeddings.npz"]
    # a failing request (one readable recording) removes its unpacked files too
    one = {f"a/{great_tits[0].path.name}": great_tits[0].path.read_bytes(), "a/broken.wav": b"not audio"}
    with pytest.raises(UserFacingError, match="at least 2 readable recordings"):
        embedding_map.build_map(zip_file=str(_write_zip(tmp_path / "one.zip", one)), model_name=MODEL, method="PCA")
    assert [p.name for p in root.iterdir()] == [Path(result.downloads[0]).parent.name]


def test_output_folders_are_bounded_in_size_oldest_first(tmp_path, monkeypatch):
    """Issue 16 #2: output folders could fill the disk in well under their 6-hour lifetime."""
    root = tmp_path / "outputs"
    monkeypatch.setattr(common, "_OUTPUT_ROOT", root)
    monkeypatch.setattr(common, "_CLEAN_EVERY_S", 0.0)
    common.configure(max_output_mb=2.5)
    folders = []
    for age_min in (50, 40, 30, 20, 0.1):
        folder = common.new_output_dir("inference")
        (folder / "embeddings.npz").write_bytes(b"\0" * 1_000_000)
        os.utime(folder, (time.time() - 60 * age_min,) * 2)
        folders.append(folder)
        if len(folders) == 1:
            common.hold_output_dir(folder)  # e.g. a kept inference run's folder: listening writes there later
    try:
        newest = common.new_output_dir("map")
    finally:
        common.configure(max_output_mb=5000.0)
    # 5 MB over a 2.5-MB bound: the oldest unheld go until it fits; the held one stays (and counts), and so does the
    # 6-s-old folder, which may still be being served
    assert sorted(p for p in root.iterdir()) == sorted([folders[0], folders[4], newest])
    common.release_output_dir(folders[0])  # dropped: removable again after its grace period
    os.utime(folders[0], (time.time() - 60 * 50,) * 2)
    common.new_output_dir("map")  # a clean-up within the default bound measures (and remembers) its 1 MB
    # sizes are remembered by folder mtime: a file added later (as the on-demand downloads are) is counted
    (folders[0] / "predictions.csv").write_bytes(b"\0" * 2_000_000)
    os.utime(folders[0], (time.time() - 60 * 49,) * 2)
    try:
        common.configure(max_output_mb=2.5)
        common.new_output_dir("map")
    finally:
        common.configure(max_output_mb=5000.0)
    assert folders[0] not in list(root.iterdir()) and folders[4] in list(root.iterdir())
