"""Labelled audio datasets for probing: a folder of sub-folders, a CSV, windows of long files, BEANS and BirdSet.

A dataset is a list of :class:`Clip` (a file, optionally a [start_s, end_s) segment, one or more labels, an
optional split and a group used to keep windows of one recording on the same side of a split) plus its sorted
class list. Every problem (missing file, unknown label, empty dataset) raises :class:`DatasetError` naming the
file, row or label, before anything is computed or written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rl_core.audio import SUPPORTED_EXTENSIONS, audio_info
from rl_core.errors import AudioError, DatasetError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("file", "label", "start_s", "end_s", "split")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Clip:
    """One example: ``path`` (whole file, or [start_s, end_s) of it), its labels, split and group."""

    path: Path
    labels: tuple[str, ...]
    start_s: float | None = None
    end_s: float | None = None
    split: str | None = None
    group: str = ""

    @property
    def label(self) -> str:
        return self.labels[0]

    def describe(self) -> str:
        seg = f" [{self.start_s:.2f}-{self.end_s:.2f} s]" if self.start_s is not None else ""
        return f"{self.path}{seg}"


@dataclass
class AudioDataset:
    name: str
    clips: list[Clip]
    classes: list[str] = field(default_factory=list)
    multi_label: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not self.clips:
            raise DatasetError(f"dataset '{self.name}' is empty ({self.source or 'no source'}): no labelled clips found")
        seen = sorted({label for clip in self.clips for label in clip.labels})
        if not self.classes:
            self.classes = seen
        else:
            unknown = [label for label in seen if label not in self.classes]
            if unknown:
                clip = next(c for c in self.clips if unknown[0] in c.labels)
                raise DatasetError(f"dataset '{self.name}': unknown label '{unknown[0]}' (file {clip.describe()}); "
                                   f"known classes: {', '.join(self.classes)}")
        if not self.multi_label and any(len(c.labels) != 1 for c in self.clips):
            bad = next(c for c in self.clips if len(c.labels) != 1)
            raise DatasetError(f"dataset '{self.name}': {bad.describe()} has labels {bad.labels}; single-label "
                               "datasets need exactly one (set a label separator for multi-label data)")

    def __len__(self) -> int:
        return len(self.clips)

    def label_indices(self) -> np.ndarray:
        """(N,) class indices (single-label datasets)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c.label] for c in self.clips], dtype=np.int64)

    def label_matrix(self) -> np.ndarray:
        """(N, C) multi-hot labels."""
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.zeros((len(self.clips), len(self.classes)), dtype=np.float32)
        for row, clip in enumerate(self.clips):
            for label in clip.labels:
                out[row, index[label]] = 1.0
        return out

    def targets(self) -> np.ndarray:
        return self.label_matrix() if self.multi_label else self.label_indices()

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for clip in self.clips:
            for label in clip.labels:
                counts[label] += 1
        return counts

    def require_examples_per_class(self, minimum: int = 2) -> None:
        """A class with fewer examples cannot be both trained on and tested: say which one."""
        for label, count in self.class_counts().items():
            if count < minimum:
                files = [c.describe() for c in self.clips if label in c.labels]
                raise DatasetError(
                    f"dataset '{self.name}': class '{label}' has {count} example(s) ({', '.join(files) or 'none'}); "
                    f"at least {minimum} are needed to train and test a probe. Add recordings or drop the class."
                )

    def subset(self, indices: Sequence[int], name: str | None = None) -> "AudioDataset":
        return AudioDataset(name or self.name, [self.clips[i] for i in indices], list(self.classes),
                            self.multi_label, self.source)

    def split_indices(self, split: str) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.clips) if c.split == split], dtype=np.int64)


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)


def folder_dataset(root: str | Path, name: str | None = None, classes: Sequence[str] | None = None) -> AudioDataset:
    """Labels from sub-folder names: ``root/<label>/**/<file>``. Audio files directly in ``root`` are an error."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    clips, loose = [], []
    for path in _audio_files(root):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            loose.append(path.name)
            continue
        clips.append(Clip(path, (rel.parts[0],), group=str(rel)))
    if loose:
        raise DatasetError(f"{root}: audio files outside any label folder: {', '.join(loose[:5])}"
                           f"{' ...' if len(loose) > 5 else ''}; put each file in a folder named after its label")
    if not clips:
        raise DatasetError(f"dataset folder {root} holds no audio files in label sub-folders "
                           f"(extensions read: {', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    return AudioDataset(name or root.name, clips, list(classes or []), source=str(root))


def csv_dataset(
    csv_path: str | Path,
    audio_root: str | Path | None = None,
    label_separator: str | None = None,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    check_files: bool = True,
) -> AudioDataset:
    """Rows ``file,label[,start_s,end_s][,split]``; ``file`` relative to ``audio_root`` (default: the CSV's folder).

    With ``label_separator`` (e.g. ``";"``) a label cell may hold several labels (multi-label dataset).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"dataset CSV not found: {csv_path}")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{csv_path}: not a readable CSV ({err})") from None
    unknown = [c for c in df.columns if c not in CSV_COLUMNS]
    missing = [c for c in ("file", "label") if c not in df.columns]
    if unknown or missing:
        raise DatasetError(f"{csv_path}: columns must be {', '.join(CSV_COLUMNS)} (file and label required); "
                           f"unknown {unknown}, missing {missing}")
    if ("start_s" in df.columns) != ("end_s" in df.columns):
        raise DatasetError(f"{csv_path}: give both start_s and end_s, or neither")
    root = Path(audio_root) if audio_root else csv_path.parent
    clips, missing_files = [], []
    for row_number, rec in enumerate(df.to_dict("records"), start=2):  # row 1 is the header
        where = f"{csv_path}, row {row_number}"
        path = Path(rec["file"]) if Path(rec["file"]).is_absolute() else root / rec["file"]
        if not rec["file"].strip():
            raise DatasetError(f"{where}: empty 'file'")
        if check_files and not path.is_file():
            missing_files.append(f"{rec['file']} (row {row_number})")
            continue
        raw = rec["label"].strip()
        labels = tuple(x.strip() for x in raw.split(label_separator)) if label_separator else (raw,)
        labels = tuple(x for x in labels if x)
        if not labels:
            raise DatasetError(f"{where}: empty label for {rec['file']}")
        start = end = None
        if "start_s" in rec and (rec["start_s"].strip() or rec["end_s"].strip()):
            try:
                start, end = float(rec["start_s"]), float(rec["end_s"])
            except ValueError:
                raise DatasetError(f"{where}: start_s/end_s must be numbers, got "
                                   f"{rec['start_s']!r}/{rec['end_s']!r}") from None
            if not 0 <= start < end:
                raise DatasetError(f"{where}: need 0 <= start_s < end_s, got {start} and {end}")
        split = rec.get("split", "").strip() or None
        if split is not None and split not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got '{split}'")
        clips.append(Clip(path, labels, start, end, split, group=rec["file"]))
    if missing_files:
        raise DatasetError(f"{csv_path}: {len(missing_files)} audio file(s) named in the CSV do not exist under "
                           f"{root}: {', '.join(missing_files[:5])}{' ...' if len(missing_files) > 5 else ''}")
    return AudioDataset(name or csv_path.stem, clips, list(classes or []), multi_label=bool(label_separator),
                        source=str(csv_path))


def windowed(dataset: AudioDataset, window_s: float, hop_s: float | None = None,
             min_fraction: float = 0.5) -> AudioDataset:
    """Cut every clip into ``window_s`` windows every ``hop_s`` seconds (labels and group are inherited).

    A tail shorter than ``min_fraction`` of a window is dropped; a clip shorter than one window stays whole.
    """
    hop_s = hop_s or window_s
    if window_s <= 0 or hop_s <= 0:
        raise DatasetError("window_s and hop_s must be positive")
    out = []
    for clip in dataset.clips:
        try:
            duration = audio_info(clip.path).duration_s
        except AudioError as err:
            raise DatasetError(f"dataset '{dataset.name}': {err}") from None
        start = clip.start_s or 0.0
        end = min(clip.end_s if clip.end_s is not None else duration, duration)
        if end - start <= window_s:
            out.append(replace(clip, start_s=start, end_s=end, group=clip.group or str(clip.path)))
            continue
        t = start
        while t < end:
            stop = min(t + window_s, end)
            if stop - t >= min_fraction * window_s or t == start:
                out.append(replace(clip, start_s=round(t, 6), end_s=round(stop, 6), group=clip.group or str(clip.path)))
            t += hop_s
    return AudioDataset(f"{dataset.name}", out, list(dataset.classes), dataset.multi_label, dataset.source)


# --------------------------------------------------------------------------- BEANS and BirdSet local copies
#: BEANS classification sets: annotation CSVs (columns ``path,label``) relative to the BEANS checkout
BEANS_CLASSIFICATION = {
    "esc50": "data/esc50/meta/esc50.{split}.csv",
    "speech-commands": "data/speech_commands/{split}.csv",
    "watkins": "data/watkins/annotations.{split}.csv",
    "bats": "data/egyptian_fruit_bats/annotations.{split}.csv",
    "cbi": "data/cbi/annotations.{split}.csv",
    "dogs": "data/dogs/annotations.{split}.csv",
    "humbugdb": "data/HumBugDB/data/metadata/{split}.csv",
}
BEANS_DETECTION = ("dcase", "enabirds", "hiceas", "rfcx", "hainan-gibbons")


def beans_dataset(beans_root: str | Path, name: str, splits: Iterable[str] = SPLITS) -> AudioDataset:
    """A BEANS classification set prepared by the BEANS scripts (``scripts/<name>.py``) in ``beans_root``.

    Reads ``<csv>.train/valid/test`` with columns ``path`` (relative to ``beans_root``) and ``label``.
    Detection sets (jsonl windows) are not supported yet and raise a clear error.
    """
    root = Path(beans_root)
    if name in BEANS_DETECTION:
        raise DatasetError(f"BEANS detection set '{name}' is not supported by this loader (classification only: "
                           f"{', '.join(BEANS_CLASSIFICATION)})")
    if name not in BEANS_CLASSIFICATION:
        raise DatasetError(f"unknown BEANS dataset '{name}'; classification sets: {', '.join(BEANS_CLASSIFICATION)}")
    clips: list[Clip] = []
    for split in splits:
        csv = root / BEANS_CLASSIFICATION[name].format(split=split)
        if not csv.is_file():
            raise DatasetError(f"BEANS '{name}': {csv} not found; run the BEANS preparation script "
                               f"scripts/{name.replace('-', '_')}.py in {root} first (see docs/evaluation.md)")
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        if not {"path", "label"} <= set(df.columns):
            raise DatasetError(f"{csv}: expected columns 'path' and 'label', got {list(df.columns)}")
        missing = [p for p in df["path"] if not (root / p).is_file()]
        if missing:
            raise DatasetError(f"{csv}: {len(missing)} file(s) missing under {root}, e.g. {missing[0]}")
        split_name = "valid" if split == "valid" else split
        clips += [Clip(root / p, (label,), split=split_name, group=p) for p, label in zip(df["path"], df["label"])]
    return AudioDataset(f"beans_{name}", clips, source=str(root))


BIRDSET_CODES = ("POW", "PER", "NES", "UHH", "HSN", "NBP", "SSW", "SNE")


def birdset_dataset(birdset_root: str | Path, code: str, splits: Iterable[str] = ("train", "test_5s")) -> AudioDataset:
    """A BirdSet subset exported to CSV: ``<root>/<CODE>/<split>.csv`` (see docs/evaluation.md for the export).

    Columns: ``filepath`` (absolute or relative to ``<root>/<CODE>``), ``labels`` (eBird codes separated by
    ``;``), optional ``start_time``/``end_time`` in seconds. ``train`` rows become split ``train`` and
    ``test_5s`` rows split ``test``. Multi-label.
    """
    code = code.upper()
    if code not in BIRDSET_CODES:
        raise DatasetError(f"unknown BirdSet subset '{code}'; use one of {', '.join(BIRDSET_CODES)}")
    folder = Path(birdset_root) / code
    clips: list[Clip] = []
    for split in splits:
        csv = folder / f"{split}.csv"
        if not csv.is_file():
            raise DatasetError(f"BirdSet {code}: {csv} not found (export it as described in docs/evaluation.md)")
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        if not {"filepath", "labels"} <= set(df.columns):
            raise DatasetError(f"{csv}: expected columns filepath, labels[, start_time, end_time]; got {list(df.columns)}")
        for row_number, rec in enumerate(df.to_dict("records"), start=2):
            path = Path(rec["filepath"]) if Path(rec["filepath"]).is_absolute() else folder / rec["filepath"]
            if not path.is_file():
                raise DatasetError(f"{csv}, row {row_number}: audio file not found: {path}")
            labels = tuple(x.strip() for x in rec["labels"].split(";") if x.strip())
            if not labels:
                continue  # a soundscape window without any bird: BirdSet keeps it only as a negative; we skip it
            start = float(rec["start_time"]) if rec.get("start_time") else None
            end = float(rec["end_time"]) if rec.get("end_time") else None
            clips.append(Clip(path, labels, start, end, "train" if split == "train" else "test", group=str(path)))
    return AudioDataset(f"birdset_{code}", clips, multi_label=True, source=str(folder))
