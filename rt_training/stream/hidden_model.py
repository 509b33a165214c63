"""The hidden label model of the synthetic stream: what a trained model should recover.

A fixed random function of the cleaned model features (standardized numbers, category indices): linear terms,
a few pairwise interactions and per-category effects. Calibrated on a sample so its signal has a known spread
(and, for binary labels, a known base rate), whatever the spec's features are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

BASE_RATE = 0.2
LOGIT_STD = 2.0
PAIRS = 3
PAIR_WEIGHT_STD = 0.7


@dataclass(frozen=True)
class HiddenModel:
    """``scale * (x @ w + sum pair terms + sum category effects) + intercept`` over model features."""

    weights: np.ndarray
    pairs: np.ndarray  # (k, 2) feature indices
    pair_weights: np.ndarray
    effects: tuple[np.ndarray, ...]  # per categorical feature: one per value, then 0.0 for unknown
    scale: float = 1.0
    intercept: float = 0.0

    @classmethod
    def random(
        cls, rng: np.random.Generator, n_numeric: int, categories: list[tuple[int, float]]
    ) -> HiddenModel:
        """Standard normal weights; ``categories`` holds (number of values, effect std) per categorical."""
        all_pairs = [(a, b) for a in range(n_numeric) for b in range(a + 1, n_numeric)]
        k = min(PAIRS, len(all_pairs))
        chosen = rng.choice(len(all_pairs), size=k, replace=False) if k else np.empty(0, np.intp)
        return cls(
            weights=rng.standard_normal(n_numeric),
            pairs=np.array([all_pairs[i] for i in chosen], dtype=np.intp).reshape(k, 2),
            pair_weights=PAIR_WEIGHT_STD * rng.standard_normal(k),
            effects=tuple(np.append(sd * rng.standard_normal(size), 0.0) for size, sd in categories),
        )

    def raw(self, x: np.ndarray, cats: list[np.ndarray]) -> np.ndarray:
        """The unscaled signal of standardized numbers ``x`` (rows x features) and category indices."""
        s = x @ self.weights
        for (a, b), w in zip(self.pairs, self.pair_weights, strict=True):
            s = s + w * x[:, a] * x[:, b]
        for effect, idx in zip(self.effects, cats, strict=True):
            s = s + effect[idx]
        return s

    def signal(self, x: np.ndarray, cats: list[np.ndarray]) -> np.ndarray:
        return self.scale * self.raw(x, cats) + self.intercept

    def turned(self, other: HiddenModel, angle: float) -> HiddenModel:
        """This model turned towards ``other`` by ``angle`` (radians): the concept drift."""
        c, s = math.cos(angle), math.sin(angle)
        return replace(
            self,
            weights=c * self.weights + s * other.weights,
            pair_weights=c * self.pair_weights + s * other.pair_weights,
            effects=tuple(c * a + s * b for a, b in zip(self.effects, other.effects, strict=True)),
        )

    def calibrated(self, x: np.ndarray, cats: list[np.ndarray], binary: bool) -> HiddenModel:
        """Scale and intercept for a fixed signal spread and, for binary labels, the base rate."""
        raw = self.raw(x, cats)
        spread = float(raw.std())
        if not binary:
            scale = 1.0 / spread if spread > 0 else 1.0
            return replace(self, scale=scale, intercept=-scale * float(raw.mean()))
        scale = LOGIT_STD / spread if spread > 0 else 1.0
        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = (lo + hi) / 2
            rate = float(np.mean(1.0 / (1.0 + np.exp(-(scale * raw + mid)))))
            lo, hi = (mid, hi) if rate < BASE_RATE else (lo, mid)
        return replace(self, scale=scale, intercept=(lo + hi) / 2)
