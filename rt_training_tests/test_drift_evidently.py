"""Our drift verdicts against Evidently 0.7's DataDriftPreset run on the same windows in the same process.

Scores must agree to 1e-9 relative. Bit-for-bit agreement is not possible for chi-squared and Jensen-Shannon:
Evidently sums over the values of a Python ``set`` of categories, whose order follows the process's string
hash seed, so its own scores vary in the last bits from run to run.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rt_training.drift import detect_drift, evidently_report_html, evidently_verdicts, stattests
from rt_training.drift.detector import DriftResult
from rt_training.drift.report import EvidentlyVerdicts
from rt_training.spec.models import DriftPolicy

pytestmark = pytest.mark.timeout(180)

NUMERIC = [
    "num_stable",
    "num_shift",
    "num_scale_f32",
    "num_int",
    "num_missing",
    "num_levels",
    "num_binary",
    "score",
]
CATEGORICAL = ["cat_stable", "cat_shift", "cat_binary", "cat_missing", "cat_new", "label"]


def _windows(n_ref: int, n_cur: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current window: each column is stable or drifted in its own way."""
    rng = np.random.default_rng(seed)

    def window(n: int, drifted: bool) -> pd.DataFrame:
        d = float(drifted)
        missing = rng.normal(0.05 * d, 1, n)
        missing[rng.random(n) < 0.15] = np.nan
        missing[rng.random(n) < 0.01] = np.inf
        cat_missing = rng.choice(np.array(["u", "v", "w", None], dtype=object), n, p=[0.3, 0.3, 0.2, 0.2])
        return pd.DataFrame(
            {
                "num_stable": rng.normal(0, 1, n),
                "num_shift": rng.normal(0.35 * d, 1, n),
                "num_scale_f32": rng.normal(0, 1 + 0.3 * d, n).astype(np.float32),
                "num_int": rng.integers(0, 100, n),
                "num_missing": missing,
                "num_levels": rng.choice([1.0, 2.0, 3.0, 4.0], n, p=[0.4, 0.3, 0.2 - 0.1 * d, 0.1 + 0.1 * d]),
                "num_binary": rng.integers(0, 2, n),
                "score": rng.beta(2, 5 - 1.5 * d, n),
                "cat_stable": rng.choice(["a", "b", "c", "d"], n).astype(object),
                "cat_shift": rng.choice(["a", "b", "c"], n, p=[0.5 - 0.15 * d, 0.3, 0.2 + 0.15 * d]).astype(
                    object
                ),
                "cat_binary": rng.choice(["yes", "no"], n, p=[0.5 + 0.2 * d, 0.5 - 0.2 * d]).astype(object),
                "cat_missing": cat_missing,
                "cat_new": rng.choice(
                    ["p", "q", "r"] if drifted else ["p", "q"], n, p=[0.45, 0.45, 0.1] if drifted else None
                ).astype(object),
                "label": rng.integers(0, 2, n),
            }
        )

    return window(n_ref, False), window(n_cur, True)


def _assert_same_verdicts(ours: DriftResult, theirs: EvidentlyVerdicts) -> None:
    assert [c.column for c in ours.columns] == list(theirs.columns)
    for col in ours.columns:
        ev = theirs.columns[col.column]
        assert col.stattest_display_name == ev.stattest, col.column
        assert col.threshold == ev.threshold, col.column
        assert col.score == pytest.approx(ev.score, rel=1e-9, abs=1e-300), col.column
        assert col.drifted == ev.drifted, (col.column, col.score, ev.score)
    assert (ours.n_drifted, ours.drift_share, ours.dataset_drift) == (
        theirs.n_drifted,
        theirs.drift_share,
        theirs.dataset_drift,
    )


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "tests"),
    [
        (600, 400, {"ks", "chisquare", "z"}),
        (3000, 2000, {"wasserstein", "jensenshannon"}),
    ],
    ids=["small-reference", "large-reference"],
)
def test_mixed_windows_match_evidently(n_ref: int, n_cur: int, tests: set[str]) -> None:
    reference, current = _windows(n_ref, n_cur, seed=n_ref)
    ours = detect_drift(reference, current, NUMERIC, CATEGORICAL)
    assert {c.stattest for c in ours.columns} == tests
    assert {"num_shift", "num_scale_f32", "num_levels", "score", "cat_shift", "cat_binary", "cat_new"} <= set(
        ours.drifted_columns
    )
    assert not {"num_stable", "num_int", "num_binary", "cat_stable", "label"} & set(ours.drifted_columns)
    _assert_same_verdicts(ours, evidently_verdicts(reference, current, NUMERIC, CATEGORICAL))


def test_arrow_tables_give_the_pandas_result() -> None:
    reference, current = _windows(600, 400, seed=7)
    from_pandas = detect_drift(reference, current, NUMERIC, CATEGORICAL)
    from_arrow = detect_drift(
        pa.Table.from_pandas(reference), pa.Table.from_pandas(current), NUMERIC, CATEGORICAL
    )
    as_arrays = {name: reference[name].to_numpy() for name in NUMERIC + CATEGORICAL}
    from_numpy = detect_drift(as_arrays, {n: current[n].to_numpy() for n in as_arrays}, NUMERIC, CATEGORICAL)
    for other in (from_arrow, from_numpy):
        assert [
            (c.column, c.stattest, c.drifted, c.reference_count, c.current_count) for c in other.columns
        ] == [
            (c.column, c.stattest, c.drifted, c.reference_count, c.current_count) for c in from_pandas.columns
        ]
        for a, b in zip(other.columns, from_pandas.columns, strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("offset", [0.0, 1e-9])
def test_dataset_drift_share_boundary_matches_evidently(offset: float) -> None:
    reference, current = _windows(600, 400, seed=3)
    share = detect_drift(reference, current, NUMERIC, CATEGORICAL).drift_share
    policy = DriftPolicy(drift_share=share + offset)
    ours = detect_drift(reference, current, NUMERIC, CATEGORICAL, policy)
    assert ours.dataset_drift is (offset == 0.0)  # drift when the share reaches the threshold
    _assert_same_verdicts(ours, evidently_verdicts(reference, current, NUMERIC, CATEGORICAL, policy))


# -- borderline: scores next to (or exactly at) the threshold ----------------------------------------------


def _column_from_counts(counts: list[int], rng: np.random.Generator) -> np.ndarray:
    values = np.repeat(np.array([f"v{i}" for i in range(len(counts))], dtype=object), counts)
    return rng.permutation(values)


def _nearest_both_sides(scores: dict[int, float], threshold: float) -> tuple[int, int]:
    """Keys whose score is the closest one above and the closest one below the threshold."""
    above = min((k for k in scores if scores[k] > threshold), key=lambda k: scores[k] - threshold)
    below = min((k for k in scores if scores[k] < threshold), key=lambda k: threshold - scores[k])
    return above, below


def test_scores_near_default_thresholds_small_reference() -> None:
    rng = np.random.default_rng(21)
    n = 600
    ref_x, cur_x = rng.normal(size=n), rng.normal(size=n)
    ks_p = {k: stattests.ks(ref_x, cur_x + k / 1000).score for k in range(400)}
    chi_p = {
        k: stattests.chisquare(np.array([200, 200, 200]), np.array([k, 200, 400 - k])).score
        for k in range(200)
    }
    z_p = {k: stattests.z_test(np.array([300, 300]), np.array([k, n - k])).score for k in range(300)}
    ks_hi, ks_lo = _nearest_both_sides(ks_p, 0.05)
    chi_hi, chi_lo = _nearest_both_sides(chi_p, 0.05)
    z_hi, z_lo = _nearest_both_sides(z_p, 0.05)
    reference = pd.DataFrame(
        {
            "ks_above": ref_x,
            "ks_below": ref_x,
            "chi_above": _column_from_counts([200, 200, 200], rng),
            "chi_below": _column_from_counts([200, 200, 200], rng),
            "z_above": _column_from_counts([300, 300], rng),
            "z_below": _column_from_counts([300, 300], rng),
        }
    )
    current = pd.DataFrame(
        {
            "ks_above": cur_x + ks_hi / 1000,
            "ks_below": cur_x + ks_lo / 1000,
            "chi_above": _column_from_counts([chi_hi, 200, 400 - chi_hi], rng),
            "chi_below": _column_from_counts([chi_lo, 200, 400 - chi_lo], rng),
            "z_above": _column_from_counts([z_hi, n - z_hi], rng),
            "z_below": _column_from_counts([z_lo, n - z_lo], rng),
        }
    )
    numeric, categorical = ["ks_above", "ks_below"], ["chi_above", "chi_below", "z_above", "z_below"]
    ours = detect_drift(reference, current, numeric, categorical)
    assert [c.stattest for c in ours.columns] == ["ks", "ks", "chisquare", "chisquare", "z", "z"]
    assert all(abs(c.score - 0.05) < 0.01 for c in ours.columns)
    assert ours.drifted_columns == ["ks_below", "chi_below", "z_below"]  # p-values: below the level is drift
    _assert_same_verdicts(ours, evidently_verdicts(reference, current, numeric, categorical))


def test_scores_near_default_thresholds_large_reference() -> None:
    rng = np.random.default_rng(22)
    n = 3000
    ref_x = rng.normal(size=n)
    norm = stattests.population_std(ref_x)
    js = {
        k: stattests.jensenshannon(np.array([1000, 1000, 1000]), np.array([k, 1000, 2000 - k])).score
        for k in range(1000)
    }
    js_hi, js_lo = _nearest_both_sides(js, 0.1)
    reference = pd.DataFrame(
        {
            "w_above": ref_x,
            "w_below": ref_x,
            "js_above": _column_from_counts([1000, 1000, 1000], rng),
            "js_below": _column_from_counts([1000, 1000, 1000], rng),
        }
    )
    current = pd.DataFrame(
        {
            # a shifted copy is exactly that far from the reference: normed distance 0.1 * (1 +- 1e-6)
            "w_above": ref_x + 0.1 * norm * (1 + 1e-6),
            "w_below": ref_x + 0.1 * norm * (1 - 1e-6),
            "js_above": _column_from_counts([js_hi, 1000, 2000 - js_hi], rng),
            "js_below": _column_from_counts([js_lo, 1000, 2000 - js_lo], rng),
        }
    )
    numeric, categorical = ["w_above", "w_below"], ["js_above", "js_below"]
    ours = detect_drift(reference, current, numeric, categorical)
    assert [c.stattest for c in ours.columns] == [
        "wasserstein",
        "wasserstein",
        "jensenshannon",
        "jensenshannon",
    ]
    assert ours.column("w_above").score == pytest.approx(0.1, rel=2e-6)
    assert ours.column("w_below").score == pytest.approx(0.1, rel=2e-6)
    assert all(abs(c.score - 0.1) < 0.005 for c in ours.columns)
    assert ours.drifted_columns == ["w_above", "js_above"]  # distances: at or above the threshold is drift
    _assert_same_verdicts(ours, evidently_verdicts(reference, current, numeric, categorical))


def _single_column(kind: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    rng = np.random.default_rng(31)
    makers: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "ks": lambda: (rng.normal(size=500), rng.normal(0.1, size=450)),
        "wasserstein": lambda: (rng.normal(size=2000), rng.normal(0.1, size=1500)),
        "z": lambda: (_column_from_counts([300, 200], rng), _column_from_counts([240, 210], rng)),
        "chisquare": lambda: (
            _column_from_counts([200, 150, 150], rng),
            _column_from_counts([140, 160, 150], rng),
        ),
        "jensenshannon": lambda: (
            _column_from_counts([900, 700, 600], rng),
            _column_from_counts([700, 800, 600], rng),
        ),
    }
    ref, cur = makers[kind]()
    numeric = ["x"] if kind in ("ks", "wasserstein") else []
    return pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur}), numeric, [] if numeric else ["x"]


@pytest.mark.parametrize(
    ("kind", "relative_offset", "drifted"),
    [
        # bit-identical scores: the threshold set to the score itself checks each comparison operator
        ("ks", 0.0, True),  # p <= threshold
        ("wasserstein", 0.0, True),  # distance >= threshold
        ("z", 0.0, False),  # p < threshold
        # summed in a hash-seed dependent order by Evidently: one part in 1e9 either side instead
        ("chisquare", -1e-9, False),
        ("chisquare", 1e-9, True),
        ("jensenshannon", -1e-9, True),
        ("jensenshannon", 1e-9, False),
    ],
)
def test_threshold_override_at_the_score_matches_evidently(
    kind: str, relative_offset: float, drifted: bool
) -> None:
    reference, current, numeric, categorical = _single_column(kind)
    score = detect_drift(reference, current, numeric, categorical).columns[0].score
    policy = DriftPolicy(stattest_threshold=score * (1 + relative_offset))
    ours = detect_drift(reference, current, numeric, categorical, policy)
    assert (ours.columns[0].stattest, ours.columns[0].drifted) == (kind, drifted)
    theirs = evidently_verdicts(reference, current, numeric, categorical, policy)
    if relative_offset == 0.0:
        assert theirs.columns["x"].score == ours.columns[0].score
    _assert_same_verdicts(ours, theirs)


def test_report_html_is_one_self_contained_file(tmp_path) -> None:
    reference, current = _windows(300, 200, seed=5)
    path = evidently_report_html(
        reference, current, ["num_shift", "score"], ["cat_shift"], tmp_path / "reports" / "drift.html"
    )
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "reports" / "drift.html"
    assert html.lstrip().lower().startswith("<html") or html.lstrip().lower().startswith("<!doctype html")
    assert not re.search(r"<script[^>]+src=", html)  # scripts are inlined, the file opens offline
    assert all(name in html for name in ("num_shift", "score", "cat_shift"))
    assert [p.name for p in path.parent.iterdir()] == ["drift.html"]
