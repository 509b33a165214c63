"""Drift of text, list and vector fields, learned/int/bool categoricals and mixture group shares.

Seeded windows; the expected scores were measured on these seeds and are asserted with tolerances a few times
their seed-to-seed spread, so a change of rule (not of rounding) fails.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from scipy.spatial import distance

from rt_training.defs.drift import report_metadata
from rt_training.drift import DriftInputError, detect_drift
from rt_training.drift.domain import auc_threshold, domain_classifier_auc
from rt_training.drift.fields import tokens, top_k
from rt_training.drift.reports import (
    DRIFT_REPORTS_TABLE,
    DriftReport,
    Reference,
    append_report,
    columns_json,
    compare_windows,
    drift_columns,
    field_drift_columns,
    read_windows,
)
from rt_training.drift.stattests import mean_shift
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import UTC_US
from rt_training.monitoring.exporter import snapshot_metrics
from rt_training.monitoring.snapshot import gather_snapshot
from rt_training.spec.loader import parse_spec

VOCAB = np.array([f"w{i}" for i in range(400)])
ZIPF = 1.0 / np.arange(1, 401) ** 1.1
ZIPF /= ZIPF.sum()
NEW_WORDS = np.array([f"new{i}" for i in range(50)])


def texts(rng: np.random.Generator, n: int, new_per_row: int = 0, words: int = 12) -> list[str]:
    """``n`` texts of ``words`` Zipf-distributed words, the last ``new_per_row`` of each from NEW_WORDS."""
    old = VOCAB[rng.choice(len(VOCAB), size=(n, words - new_per_row), p=ZIPF)]
    new = NEW_WORDS[rng.integers(0, len(NEW_WORDS), size=(n, new_per_row))]
    return [" ".join(row) for row in np.concatenate([old, new], axis=1)]


def lists(rng: np.random.Generator, n: int, mean_length: float, values: np.ndarray) -> list[list]:
    return [rng.choice(values, k).tolist() for k in rng.poisson(mean_length, n)]


def vectors(rng: np.random.Generator, n: int, dim: int = 16, shift: float = 0.0) -> pa.Array:
    values = rng.normal(size=(n, dim))
    values[:, :4] += shift  # four of sixteen coordinates move by ``shift`` stds
    return pa.array(list(values.astype(np.float32)), pa.list_(pa.float32()))


def test_tokens_are_lowercased_letter_and_digit_runs() -> None:
    found = tokens(pa.chunked_array([["Don't STOP, now!", None, "", "  x2  été--x2 "]]))
    assert found.to_pylist() == ["don", "t", "stop", "now", "x2", "été", "x2"]


def test_same_distribution_gives_no_drift_on_any_field() -> None:
    rng = np.random.default_rng(0)

    def window(n: int) -> pa.Table:
        return pa.table(
            {
                "body": texts(rng, n),
                "tags": pa.array(lists(rng, n, 4, np.array(list("abcdefghij"))), pa.list_(pa.string())),
                "scores": pa.array(lists(rng, n, 3, np.linspace(0, 1, 101)), pa.list_(pa.float64())),
                "embedding": vectors(rng, n),
            }
        )

    result = detect_drift(
        window(3000),
        window(2000),
        text_columns=["body"],
        list_columns=["tags", "scores"],
        vector_columns=["embedding"],
    )
    assert [(c.column, c.type, c.stattest) for c in result.columns] == [
        ("body.tokens", "text", "jensenshannon"),
        ("body.oov", "text", "oov_rate"),
        ("tags.length", "list", "wasserstein"),  # Evidently's rule: > 1000 rows, more than five lengths
        ("tags.elements", "list", "jensenshannon"),
        ("scores.length", "list", "wasserstein"),
        ("scores.elements", "list", "wasserstein"),
        ("embedding.mean_shift", "vector", "mean_shift"),
        ("embedding.domain_auc", "vector", "domain_auc"),
    ]
    assert result.n_drifted == 0 and not result.dataset_drift
    scores = {c.column: c.score for c in result.columns}
    assert scores["body.tokens"] < 0.04  # about a third of the threshold by design (top_k)
    assert scores["body.oov"] < 0.002  # a 400-word vocabulary is all seen in 36,000 reference tokens
    assert scores["tags.elements"] < 0.02 and scores["scores.elements"] < 0.05
    assert scores["embedding.mean_shift"] < 0.05 and abs(scores["embedding.domain_auc"] - 0.5) < 0.04
    tokens_verdict = result.column("body.tokens")
    assert tokens_verdict.reference_count == 36_000 and tokens_verdict.current_count == 24_000
    assert tokens_verdict.n_values == top_k(36_000, 24_000, 0.1) + 1 == 129
    assert tokens_verdict.details["reference_tokens_per_row"] == 12.0


def test_new_vocabulary_drifts_text_and_sets_the_oov_rate() -> None:
    rng = np.random.default_rng(1)
    reference = pa.table({"body": texts(rng, 2000)})
    current = pa.table({"body": texts(rng, 1000, new_per_row=3)})
    result = detect_drift(reference, current, text_columns=["body"])
    tokens_verdict, oov = result.columns
    # Three words in twelve never occur in the reference: the OOV rate is exactly a quarter.
    assert oov.score == 0.25 and oov.details == {
        "oov_rate": 0.25,
        "oov_count": 3000,
        "reference_tokens_per_row": 12.0,
        "current_tokens_per_row": 12.0,
    }
    assert oov.drifted and oov.threshold == 0.1
    # The new words all fall in the "other" bucket, beside the old words outside the top K.
    old_other = tokens_verdict.details["reference_other_share"]
    assert 0.15 < old_other < 0.25  # top_k(24_000, 12_000, 0.1) = 71 words of 400
    assert tokens_verdict.details["current_other_share"] == pytest.approx(0.25 + 0.75 * old_other, abs=0.01)
    # In expectation: P = the Zipf law over its top 71 words and the rest, Q = 0.75 P + 0.25 on "other".
    expected = np.append(ZIPF[:71], ZIPF[71:].sum())
    shifted = 0.75 * expected + np.eye(72)[71] * 0.25
    assert tokens_verdict.score == pytest.approx(distance.jensenshannon(expected, shifted), abs=0.015)
    assert tokens_verdict.drifted and result.dataset_drift


def test_shifted_token_frequencies_drift_without_new_words() -> None:
    rng = np.random.default_rng(2)
    reference = pa.table({"body": texts(rng, 2000)})
    flipped = VOCAB[::-1]  # the rare words become the frequent ones; the vocabulary is the same
    idx = rng.choice(len(VOCAB), size=(1000, 12), p=ZIPF)
    current = pa.table({"body": [" ".join(row) for row in flipped[idx]]})
    tokens_verdict, oov = detect_drift(reference, current, text_columns=["body"]).columns
    assert tokens_verdict.drifted and tokens_verdict.score > 0.5
    assert not oov.drifted and oov.score < 0.01


def test_longer_lists_and_new_elements_drift() -> None:
    rng = np.random.default_rng(3)
    reference = pa.table({"visits": pa.array(lists(rng, 3000, 5, np.arange(50)), pa.list_(pa.int64()))})
    current = pa.table({"visits": pa.array(lists(rng, 2000, 8, np.arange(25, 75)), pa.list_(pa.int64()))})
    length, elements = detect_drift(reference, current, list_columns=["visits"]).columns
    assert (
        length.drifted and length.stattest == "wasserstein" and length.score == pytest.approx(1.34, abs=0.1)
    )
    assert length.details["reference_mean_length"] == pytest.approx(5.0, abs=0.15)
    assert length.details["current_mean_length"] == pytest.approx(8.0, abs=0.15)
    # Half the current elements (25..74) are values the reference (0..49) never had.
    assert elements.drifted and elements.details["oov_rate"] == pytest.approx(0.5, abs=0.02)
    # Two uniform distributions overlapping by half: JS distance sqrt(ln(2) / 2) = 0.589.
    assert elements.score == pytest.approx(np.sqrt(np.log(2) / 2), abs=0.02)
    only_length = detect_drift(reference, current, list_length_columns=["visits"])
    assert [c.column for c in only_length.columns] == ["visits.length"]


def test_float_list_elements_shift_is_a_wasserstein_drift() -> None:
    rng = np.random.default_rng(4)
    reference = pa.table({"s": pa.array([rng.normal(size=3).tolist() for _ in range(1000)])})
    current = pa.table({"s": pa.array([rng.normal(0.5, size=3).tolist() for _ in range(1000)])})
    length, elements = detect_drift(reference, current, list_columns=["s"]).columns
    assert not length.drifted and length.score == 1.0  # every list has 3 elements: Z-test, nothing moved
    assert elements.drifted and elements.score == pytest.approx(0.5, abs=0.06)
    assert elements.details["current_mean"] - elements.details["reference_mean"] == pytest.approx(
        0.5, abs=0.06
    )


def test_shifted_vectors_drift_by_mean_and_domain_classifier() -> None:
    rng = np.random.default_rng(5)
    reference = pa.table({"e": vectors(rng, 3000)})
    current = pa.table({"e": vectors(rng, 3000, shift=0.3)})
    shift, auc = detect_drift(reference, current, vector_columns=["e"]).columns
    # ||(0.3, 0.3, 0.3, 0.3, 0, ...)|| / sqrt(16) = 0.15, plus sampling noise of about 0.026.
    assert shift.drifted and shift.score == pytest.approx(0.15, abs=0.02)
    assert shift.details["dim"] == 16 and shift.details["reference_spread"] == pytest.approx(4.0, abs=0.05)
    # Bayes-optimal AUC for a mean shift of 0.6 std along one direction: Phi(0.6 / sqrt(2)) = 0.664.
    assert auc.drifted and auc.score == pytest.approx(0.664, abs=0.03)
    assert auc.threshold == auc_threshold(1000, 1000) == pytest.approx(0.5758, abs=1e-4)
    assert auc.details["fit_rows"] == 2000


def test_domain_classifier_is_seeded_and_projects_wide_vectors() -> None:
    rng = np.random.default_rng(6)
    reference, current = rng.normal(size=(600, 300)), rng.normal(size=(500, 300))
    current += 0.15  # every coordinate: a shift of 2.6 stds along the diagonal
    first = domain_classifier_auc(reference, current, seed=3)
    assert first == domain_classifier_auc(reference, current, seed=3)
    assert (first.fit_rows, first.scored_reference_rows, first.scored_current_rows) == (550, 300, 250)
    assert first.drifted and first.auc > 0.8
    same = domain_classifier_auc(reference, rng.normal(size=(500, 300)), seed=3)
    assert not same.drifted and abs(same.auc - 0.5) < 0.07


def test_mean_shift_is_normed_by_the_reference_spread() -> None:
    reference = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # variances 1 and 1
    current = reference + np.array([0.3, 0.4])
    outcome = mean_shift(reference, current)
    assert outcome.score == pytest.approx(0.5 / np.sqrt(2.0)) and outcome.drifted


def test_group_shares_and_learned_int_and_bool_categoricals() -> None:
    rng = np.random.default_rng(7)
    reference = pa.table(
        {
            "topic": rng.choice(["sport", "politics", "tech"], 2000, p=[0.5, 0.3, 0.2]),
            "rank": pa.array(rng.integers(1, 6, 2000)),
            "flag": pa.array(rng.random(2000) < 0.3),
        }
    )
    current = pa.table(
        {
            "topic": rng.choice(["sport", "politics", "tech"], 1000, p=[0.2, 0.3, 0.5]),
            "rank": pa.array(rng.integers(1, 6, 1000)),
            "flag": pa.array(rng.random(1000) < 0.3),
        }
    )
    result = detect_drift(reference, current, categorical_columns=["topic", "rank", "flag"])
    topic, rank, flag = result.columns
    assert (topic.stattest, topic.drifted) == ("jensenshannon", True) and topic.score > 0.2
    assert (rank.stattest, rank.n_values, rank.drifted) == ("jensenshannon", 5, False)
    assert (flag.stattest, flag.n_values, flag.drifted) == ("jensenshannon", 2, False)


def test_tabular_verdicts_do_not_change_when_fields_are_added() -> None:
    rng = np.random.default_rng(8)
    reference = pa.table(
        {"x": rng.normal(size=1500), "c": rng.choice(["a", "b", "c"], 1500), "body": texts(rng, 1500)}
    )
    current = pa.table(
        {"x": rng.normal(0.2, size=800), "c": rng.choice(["a", "b", "c"], 800), "body": texts(rng, 800, 6)}
    )
    tabular = detect_drift(reference, current, ["x"], ["c"])
    with_text = detect_drift(reference, current, ["x"], ["c"], text_columns=["body"])
    assert with_text.columns[:2] == tabular.columns
    assert [(c.column, c.stattest, c.drifted) for c in tabular.columns] == [
        ("x", "wasserstein", True),
        ("c", "jensenshannon", False),
    ]
    assert all(c.details == {} for c in tabular.columns)
    assert (tabular.n_drifted, with_text.n_drifted, len(with_text.columns)) == (1, 3, 4)


@pytest.mark.parametrize(
    ("reference", "current", "kwargs", "message"),
    [
        (
            {"t": ["", None]},
            {"t": ["a"]},
            {"text_columns": ["t"]},
            "text column 't' has no token in the reference",
        ),
        ({"t": [1.0]}, {"t": [2.0]}, {"text_columns": ["t"]}, "column 't' has type double in the reference"),
        (
            {"v": [[1.0, 2.0]] * 4},
            {"v": [[1.0]] * 4},
            {"vector_columns": ["v"]},
            "2 values a row in the reference",
        ),
        ({"v": [[1.0]] * 3}, {"v": [[1.0]] * 4}, {"vector_columns": ["v"]}, "3 usable rows in the reference"),
        ({"l": [[], None]}, {"l": [["a"]]}, {"list_columns": ["l"]}, "list column 'l' has no element"),
        (
            {"t": ["a"]},
            {"t": ["a"]},
            {"text_columns": ["t"], "list_columns": ["t"]},
            r"more than once .*\['t'\]",
        ),
    ],
)
def test_unusable_field_input_is_refused(reference: dict, current: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(DriftInputError, match=message):
        detect_drift(pa.table(reference), pa.table(current), **kwargs)


# -- through reports.py on a real Delta silver table ---------------------------------------------------------

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TYPED_SPEC = parse_spec(
    {
        "name": "typed",
        "source": {"topic": "typed"},
        "schema": {
            "id_field": "id",
            "time_field": "event_time",
            "fields": {
                "id": {"type": "string"},
                "event_time": {"type": "timestamp"},
                "x": {"type": "float"},
                "colour": {"type": "string"},
                "rank": {"type": "int"},
                "user": {"type": "string"},
                "body": {"type": "text"},
                "tags": {"type": "list", "items": "string"},
                "visits": {"type": "list", "items": "int"},
                "scores": {"type": "list", "items": "float"},
                "embedding": {"type": "vector", "dim": 16},
                "topic": {"type": "string"},
                "label": {"type": "int"},
            },
        },
        "features": {
            "numeric": [{"name": "x"}],
            "categorical": [{"name": "colour"}, {"name": "rank"}, {"name": "user", "hash_buckets": 64}],
            "text": [{"name": "body"}],
            "sequence": [{"name": "tags"}, {"name": "visits", "hash_buckets": 100}, {"name": "scores"}],
            "vector": [{"name": "embedding"}],
        },
        "label": {"field": "label"},
        "sampling": {"mixture": {"by": "topic"}},
        "drift": {"window_rows": 1200},
    }
)
"""Every kind of field; ``topic`` is the mixture's group field and no feature."""


def silver_rows(rng: np.random.Generator, n: int, start: int, drifted: bool) -> pa.Table:
    """Typed silver rows (meta columns left out: the drift report reads only these)."""
    topics = ["sport", "politics", "tech"]
    tags = np.array(list("abcdefghij")) if not drifted else np.array(list("fghijklmno"))
    return pa.table(
        {
            "id": [f"e{start + i}" for i in range(n)],
            "event_time": pa.array([T0 + timedelta(seconds=(start + i) / 10) for i in range(n)], UTC_US),
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "rank": pa.array(rng.integers(1, 6, n)),
            "user": [f"u{u}" for u in rng.integers(0, 10_000, n)],
            "body": texts(rng, n, new_per_row=3 if drifted else 0),
            "tags": pa.array(lists(rng, n, 4, tags), pa.list_(pa.string())),
            "visits": pa.array(lists(rng, n, 6, np.arange(10_000)), pa.list_(pa.int64())),
            "scores": pa.array(lists(rng, n, 3, np.linspace(0, 1, 101)), pa.list_(pa.float64())),
            "embedding": vectors(rng, n, shift=0.3 if drifted else 0.0),
            "topic": rng.choice(topics, n, p=[0.2, 0.3, 0.5] if drifted else [0.5, 0.3, 0.2]),
            "label": pa.array(rng.integers(0, 2, n)),
        }
    )


def test_report_on_a_delta_silver_table_with_text_list_and_vector_fields(tmp_path: Path) -> None:
    spec, lake = TYPED_SPEC, LakeLocation(str(tmp_path))
    rng = np.random.default_rng(11)
    silver = lake.uri(spec.name, "silver")
    write_deltalake(silver, silver_rows(rng, 1200, 0, drifted=False))  # version 0: what the champion saw
    write_deltalake(silver, silver_rows(rng, 1200, 1200, drifted=True), mode="append")
    cut = T0 + timedelta(seconds=119.9)
    reference = Reference("c1", str(tmp_path / "training_set"), 0, silver_version=0, cut=cut)

    numeric, categorical = drift_columns(spec)
    # Learned-vocabulary categoricals on string and int fields are compared, the hash-bucketed id is not; the
    # mixture's group field is compared like a categorical column.
    assert (numeric, categorical) == (["x"], ["colour", "rank", "label", "topic"])
    fields = field_drift_columns(spec)
    assert (fields.text, fields.lists, fields.list_lengths, fields.vectors) == (
        ["body"],
        ["tags", "scores"],
        ["visits"],
        ["embedding"],
    )
    read = [*numeric, *categorical, *fields.names, spec.time_field]
    windows = read_windows(spec, lake, reference, read)
    assert (windows.reference.num_rows, windows.current.num_rows) == (1200, 1200)
    assert windows.watermark == T0 + timedelta(seconds=239.9)
    result = compare_windows(spec, windows.reference, windows.current, numeric, categorical)
    verdicts = {c.column: c.drifted for c in result.columns}
    assert list(verdicts) == [
        "x",
        "colour",
        "rank",
        "label",
        "topic",
        "body.tokens",
        "body.oov",
        "tags.length",
        "tags.elements",
        "scores.length",
        "scores.elements",
        "visits.length",
        "embedding.mean_shift",
        "embedding.domain_auc",
    ]
    drifted = {name for name, flag in verdicts.items() if flag}
    assert drifted == {
        "topic",
        "body.tokens",
        "body.oov",
        "tags.elements",
        "embedding.mean_shift",
        "embedding.domain_auc",
    }
    assert result.n_drifted == 6 and result.drift_share == 6 / 14 and not result.dataset_drift
    # A quarter of the current tokens are new words, plus a few tail words 1,200 reference rows did not show.
    assert result.column("body.oov").score == pytest.approx(0.2507, abs=1e-4)

    # The report row's columns_json carries every verdict and its details; the exporter reads them back.
    stored = json.loads(columns_json(result))
    assert [c["column"] for c in stored] == list(verdicts)
    oov_rate = result.column("body.oov").score
    assert stored[6]["details"]["oov_rate"] == oov_rate and stored[0]["details"] == {}
    report = DriftReport(
        report_id="r1",
        created_at=T0,
        reference=reference,
        result=result,
        quality=None,
        quality_rows=0,
        watermark=windows.watermark,
        numeric_columns=numeric,
        categorical_columns=categorical,
        reference_rows=windows.reference,
        current_rows=windows.current,
        row={
            "report_id": "r1",
            "created_at": T0,
            "reference_version": 0,
            "current_rows": 1200,
            "drift_share": result.drift_share,
            "n_drifted": result.n_drifted,
            "dataset_drift": result.dataset_drift,
            "columns_json": columns_json(result),
            "html_path": "",
            "summary": result.summary(),
            "champion_id": "c1",
            "quality_json": None,
            "watermark": windows.watermark,
            "current_start": T0 + timedelta(seconds=120),
            "current_end": windows.watermark,
            "quality_after": cut,
        },
    )
    metadata = report_metadata(report)
    assert metadata["body.oov:oov_rate"] == oov_rate
    assert (
        metadata["tags.length:current_mean_length"]
        == result.column("tags.length").details["current_mean_length"]
    )
    assert metadata["embedding.domain_auc:scored_current_rows"] == 600.0
    assert "| embedding.domain_auc | Domain classifier ROC AUC |" in metadata["columns"].value

    append_report(lake.uri(spec.name, DRIFT_REPORTS_TABLE), report.row)
    snapshot = gather_snapshot(spec, lake.root)
    assert snapshot.drift is not None
    by_column = {c.column: c for c in snapshot.drift.columns}
    assert by_column["body.oov"].details["oov_rate"] == oov_rate and by_column["x"].details == {}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in snapshot_metrics(snapshot)
        for s in family.samples
    }
    oov = (
        "rt_training_column_drift_detail",
        (("column", "body.oov"), ("name", "oov_rate"), ("pipeline", "typed")),
    )
    assert samples[oov] == oov_rate
    score = ("rt_training_column_drift_score", (("column", "embedding.domain_auc"), ("pipeline", "typed")))
    assert samples[score] == result.column("embedding.domain_auc").score
