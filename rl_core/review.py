"""From verified detections to a score threshold a user can trust.

After listening, each reviewed detection is correct (positive) or not (negative); "unsure" marks are left out.
Two views of the same verifications:

* :func:`precision_by_score_bin`: how many detections were correct in each score band (what reviewers look at);
* :func:`calibrate_threshold`: a logistic regression of correctness on the logit of the score (Wood & Kahl 2024,
  J. Ornithol., "Guidelines for appropriate use of BirdNET scores") gives P(correct | score); the threshold is the
  lowest score whose predicted probability reaches the target precision. With too few verifications, or when
  the score does not predict correctness (slope <= 0), it says so instead of inventing a number.

:func:`review_sample` draws what to listen to next: the highest scores first, or an even spread over score bins,
which is what a calibration needs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from rl_core.errors import ConfigError

log = logging.getLogger(__name__)

#: the verdicts a reviewer can give; "unsure" is stored but does not count for or against a threshold
VERDICTS = ("positive", "negative", "unsure")
_EPS = 1e-6


def _verified(scores: np.ndarray, verdicts: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    verdicts = np.asarray(verdicts, dtype=object).ravel()
    if scores.shape != verdicts.shape:
        raise ConfigError(f"{scores.size} scores for {verdicts.size} verdicts")
    unknown = sorted({str(v) for v in verdicts} - set(VERDICTS))
    if unknown:
        raise ConfigError(f"unknown verdict(s) {unknown}: use {', '.join(VERDICTS)}")
    keep = verdicts != "unsure"
    return scores[keep], (verdicts[keep] == "positive").astype(np.int64)


def precision_by_score_bin(scores, verdicts, bins: int = 10) -> pd.DataFrame:
    """Verified detections per score band [lo, hi): counts and the share that was correct."""
    s, correct = _verified(scores, verdicts)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    band = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, int(bins) - 1)
    rows = []
    for b in range(int(bins)):
        mask = band == b
        n = int(mask.sum())
        pos = int(correct[mask].sum())
        rows.append({"score_from": round(float(edges[b]), 3), "score_to": round(float(edges[b + 1]), 3),
                     "verified": n, "correct": pos, "precision": pos / n if n else np.nan})
    return pd.DataFrame(rows)


@dataclass
class Calibration:
    """A logistic fit of correctness on logit(score) and the threshold it gives for one target precision."""

    species: str
    target_precision: float
    threshold: float | None
    intercept: float
    slope: float
    verified: int
    correct: int
    note: str = ""

    def probability_correct(self, scores: np.ndarray) -> np.ndarray:
        z = np.log(np.clip(scores, _EPS, 1 - _EPS) / (1 - np.clip(scores, _EPS, 1 - _EPS)))
        return 1.0 / (1.0 + np.exp(-(self.intercept + self.slope * z)))

    def as_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(scores, verdicts, target_precision: float = 0.9, species: str = "",
                        min_verified: int = 10) -> Calibration:
    """The lowest score at which a detection is correct with probability ``target_precision``."""
    if not 0.0 < target_precision < 1.0:
        raise ConfigError(f"target precision must be between 0 and 1 (exclusive), got {target_precision}")
    s, correct = _verified(scores, verdicts)
    n, pos = int(s.size), int(correct.sum())
    base = dict(species=species, target_precision=float(target_precision), verified=n, correct=pos)
    if n < min_verified or pos in (0, n):
        why = (f"only {n} verified detection(s) (need {min_verified})" if n < min_verified else
               "all verified detections were " + ("correct" if pos == n else "wrong"))
        return Calibration(threshold=None, intercept=np.nan, slope=np.nan,
                           note=f"{why}: verify detections across the whole score range", **base)
    from sklearn.linear_model import LogisticRegression

    z = np.log(np.clip(s, _EPS, 1 - _EPS) / (1 - np.clip(s, _EPS, 1 - _EPS)))[:, None]
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(z, correct)  # effectively unpenalised
    intercept, slope = float(fit.intercept_[0]), float(fit.coef_[0, 0])
    if slope <= 0:
        return Calibration(threshold=None, intercept=intercept, slope=slope,
                           note="higher scores were not more often correct: no threshold reaches the target", **base)
    target_logit = np.log(target_precision / (1 - target_precision))
    threshold = float(1.0 / (1.0 + np.exp(-(target_logit - intercept) / slope)))
    note = ""
    if threshold >= 1.0 - 1e-4:
        threshold, note = None, "the target precision is not reached below a score of 1"
    return Calibration(threshold=None if threshold is None else round(threshold, 4), intercept=intercept,
                       slope=slope, note=note, **base)


def review_sample(scores, n: int = 20, order: str = "score", bins: int = 10, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` detections to review: ``order="score"`` best first, ``"bins"`` spread evenly over score
    bands (a calibration needs low and high scores alike)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = max(0, min(int(n), s.size))
    if order == "score":
        return np.argsort(-s, kind="stable")[:n]
    if order != "bins":
        raise ConfigError(f"unknown review order '{order}': use score or bins")
    rng = np.random.default_rng(seed)
    band = np.clip((s * bins).astype(int), 0, bins - 1)
    pools = [rng.permutation(np.flatnonzero(band == b)).tolist() for b in range(bins - 1, -1, -1)]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:  # round robin over bands, high to low
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return np.asarray(picked, dtype=np.int64)
