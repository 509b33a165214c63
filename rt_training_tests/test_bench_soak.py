"""The soak benchmark's plain-data helpers: offset reconciliation, growth fits, process kinds, recovery, causes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _soak import (
    failure_causes,
    first_line,
    growth_per_hour,
    process_kinds,
    reconcile,
    recovery_seconds,
    user_error,
)


def test_reconcile_exact_lake_has_nothing_lost_or_duplicated():
    rng = np.random.default_rng(3)
    bounds = {0: (0, 1000), 1: (0, 700), 2: (50, 400)}
    offsets = {p: rng.permutation(np.arange(lo, hi)) for p, (lo, hi) in bounds.items()}
    result = reconcile(bounds, offsets)
    assert (result.lost, result.duplicated, result.outside, result.ok) == (0, 0, 0, True)


def test_reconcile_counts_each_kind_of_mismatch_per_partition():
    bounds = {0: (0, 10), 1: (5, 8)}
    offsets = {
        0: np.array([0, 1, 2, 2, 2, 4, 5, 6, 7, 8, 9, 12]),  # 3 missing, 2 extra copies of 2, 12 outside
        1: np.array([5, 6, 7, 4]),  # 4 is below the earliest
        3: np.array([1, 2]),  # a partition Kafka does not have
    }
    result = reconcile(bounds, offsets)
    assert result.by_partition == {
        0: {"lost": 1, "duplicated": 2, "outside": 1},
        1: {"lost": 0, "duplicated": 0, "outside": 1},
        3: {"lost": 0, "duplicated": 0, "outside": 2},
    }
    assert (result.lost, result.duplicated, result.outside, result.ok) == (1, 2, 4, False)


def test_reconcile_empty_table_loses_every_offset():
    result = reconcile({0: (0, 5), 1: (2, 4)}, {})
    assert (result.lost, result.duplicated, result.outside) == (7, 0, 0)


def test_growth_per_hour_recovers_a_noisy_slope_and_refuses_too_few_samples():
    rng = np.random.default_rng(0)
    t = np.arange(0, 900, 5.0)
    rss = 300e6 + 2e6 / 3600 * t + rng.normal(0, 1e5, len(t))  # 2 MB/h on noise of 0.1 MB
    assert growth_per_hour(list(t), list(rss)) == pytest.approx(2e6, rel=0.05)
    assert growth_per_hour(list(t), [300e6] * len(t)) == pytest.approx(0.0, abs=1e-3)
    assert growth_per_hour([0.0, 5.0], [1.0, 2.0]) is None
    assert growth_per_hour([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]) is None


def test_process_kinds_follow_command_lines_and_the_run_launcher():
    tree = {
        10: (1, "dagster dev -w workspace.yaml"),
        11: (10, "python -m dagster code-server start -m rt_training.definitions"),
        12: (11, "python -m dagster api grpc --lazy-load-user-code"),
        13: (10, "python -m dagster_webserver -h 127.0.0.1"),
        14: (10, "python -m dagster._daemon run"),
        15: (14, "python -m rt_training.ops.run_zygote dagster pyarrow"),
        16: (15, "python -m rt_training.ops.run_zygote dagster pyarrow"),
        17: (16, "python -m torch.distributed.run --nproc-per-node 1"),
        18: (14, "python -m dagster api execute_run {}"),
        19: (13, "sh -c something"),
    }
    assert process_kinds(tree, 10) == {
        10: "dagster dev",
        11: "code server",
        12: "code server",
        13: "webserver",
        14: "daemon",
        15: "run launcher",
        16: "run",
        17: "run",
        18: "run",
        19: "webserver",
    }


def test_recovery_seconds_skips_samples_before_the_return_and_while_down():
    samples = [(0.0, 100), (5.0, 100), (10.0, None), (15.0, 100), (20.0, 150), (25.0, 400)]
    assert recovery_seconds(samples, since=12.0, target=101) == 8.0
    assert recovery_seconds(samples, since=12.0, target=400) == 13.0
    assert recovery_seconds(samples, since=12.0, target=401) is None


def test_failure_causes_group_by_job_and_first_line():
    failures = [
        ("ingest_job", "\nKafkaUnreachableError: no broker at 127.0.0.1:1\n  File x"),
        ("ingest_job", "KafkaUnreachableError: no broker at 127.0.0.1:1"),
        ("train_job", "RuntimeError: out of memory"),
        ("ingest_job", ""),
    ]
    assert failure_causes(failures) == [
        {"job": "ingest_job", "cause": "KafkaUnreachableError: no broker at 127.0.0.1:1", "runs": 2},
        {"job": "ingest_job", "cause": "(no error message)", "runs": 1},
        {"job": "train_job", "cause": "RuntimeError: out of memory", "runs": 1},
    ]
    assert first_line("x" * 500, limit=10) == "x" * 10


def test_user_error_is_the_exception_the_op_raised_not_its_cause():
    """A real Dagster step failure: the op raises our error from kafka-python's. The soak reports ours (it once
    reported the raw ``KafkaConnectionError`` by walking to the innermost cause)."""
    import dagster as dg
    from kafka.errors import KafkaConnectionError

    from rt_training.stream.client import KafkaUnreachableError

    @dg.op
    def read() -> None:
        try:
            raise KafkaConnectionError("socket disconnected")
        except KafkaConnectionError as exc:
            raise KafkaUnreachableError("127.0.0.1:1", 6.0, repr(exc)) from exc

    @dg.job
    def ingest() -> None:
        read()

    result = ingest.execute_in_process(raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.event_specific_data.error
    assert error.cls_name.startswith("Dagster")
    found = user_error(error)
    assert found.cls_name == "KafkaUnreachableError"
    assert first_line(found.message).startswith(
        "rt_training.stream.client.KafkaUnreachableError: Kafka is unreachable at 127.0.0.1:1"
    )
    assert found.cause.cls_name == "KafkaConnectionError"
