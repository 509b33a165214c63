"""Evidently's own DataDriftPreset report: the HTML a person reads, and its verdicts to check ours against.

:func:`rt_training.drift.detector.detect_drift` makes the decision; this module runs Evidently itself on the same
windows with the same policy, for the human-readable report kept with each drift check and for tests and
benchmarks that compare verdicts. ``evidently`` is imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from rt_training.drift.detector import Frame, validate_columns
from rt_training.spec.models import DriftPolicy

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
_DRIFTED_COLUMNS_COUNT = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class EvidentlyColumnVerdict:
    """One column as Evidently's report judged it (``stattest`` is Evidently's display name)."""

    column: str
    stattest: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class EvidentlyVerdicts:
    """Evidently's per-column and dataset verdicts, read from its report snapshot."""

    columns: dict[str, EvidentlyColumnVerdict]
    n_drifted: int
    drift_share: float
    dataset_drift: bool

    @property
    def drifted(self) -> dict[str, bool]:
        """Column name to Evidently's drift flag."""
        return {name: v.drifted for name, v in self.columns.items()}


def run_evidently(
    reference: Frame,
    current: Frame,
    numeric_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    policy: DriftPolicy | None = None,
) -> Snapshot:
    """Run Evidently's ``Report([DataDriftPreset()])`` on the two windows with the policy's settings.

    The column types are declared (not inferred), and the policy's ``stattest_threshold`` and ``drift_share``
    are passed as the preset's ``threshold`` and ``drift_share``, so the report judges exactly what
    :func:`~rt_training.drift.detector.detect_drift` judges.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    policy = policy or DriftPolicy()
    validate_columns(numeric_columns, categorical_columns)
    columns = [*numeric_columns, *categorical_columns]
    definition = DataDefinition(
        numerical_columns=list(numeric_columns), categorical_columns=list(categorical_columns)
    )
    preset = DataDriftPreset(
        columns=columns, drift_share=policy.drift_share, threshold=policy.stattest_threshold
    )
    report = Report([preset], include_tests=True)
    return report.run(
        Dataset.from_pandas(_as_pandas(current, columns), data_definition=definition),
        Dataset.from_pandas(_as_pandas(reference, columns), data_definition=definition),
    )


def verdicts_from_snapshot(snapshot: Snapshot) -> EvidentlyVerdicts:
    """Read the per-column drift flags, scores and the dataset verdict out of a DataDriftPreset snapshot.

    A column's flag is the status of Evidently's own "Value Drift" test for it (FAIL means drift detected), not a
    re-comparison of its score with the threshold.
    """
    content = snapshot.dict()
    scores: dict[str, dict[str, Any]] = {}
    count: dict[str, Any] = {}
    for metric in content["metrics"]:
        config = metric["config"]
        if config["type"] == _VALUE_DRIFT:
            scores[config["column"]] = {**config, "value": metric["value"]}
        elif config["type"] == _DRIFTED_COLUMNS_COUNT:
            count = metric["value"]
    drifted: dict[str, bool] = {}
    dataset_drift = False
    for test in content["tests"]:
        params = test["metric_config"]["params"]
        if params["type"] == _VALUE_DRIFT:
            drifted[params["column"]] = test["status"] == "FAIL"
        elif params["type"] == _DRIFTED_COLUMNS_COUNT:
            dataset_drift = test["status"] == "FAIL"
    columns = {
        name: EvidentlyColumnVerdict(
            column=name,
            stattest=s["method"],
            score=float(s["value"]),
            threshold=float(s["threshold"]),
            drifted=drifted[name],
        )
        for name, s in scores.items()
    }
    return EvidentlyVerdicts(
        columns=columns,
        n_drifted=int(count["count"]),
        drift_share=float(count["share"]),
        dataset_drift=dataset_drift,
    )


def evidently_verdicts(
    reference: Frame,
    current: Frame,
    numeric_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    policy: DriftPolicy | None = None,
) -> EvidentlyVerdicts:
    """Evidently's verdicts on the two windows (see :func:`run_evidently`)."""
    return verdicts_from_snapshot(
        run_evidently(reference, current, numeric_columns, categorical_columns, policy)
    )


def evidently_report_html(
    reference: Frame,
    current: Frame,
    numeric_columns: Sequence[str],
    categorical_columns: Sequence[str],
    path: str | Path,
    policy: DriftPolicy | None = None,
) -> Path:
    """Write Evidently's DataDriftPreset report as one self-contained HTML file (scripts inlined); return its path.

    Parent folders are created. The file is written next to its final name and renamed into place, so a reader
    never sees half a report.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot = run_evidently(reference, current, numeric_columns, categorical_columns, policy)
    partial = path.with_name(f".{path.name}.partial")
    # Snapshot.save_html silently ignores anything but a str path.
    snapshot.save_html(str(partial))
    partial.replace(path)
    return path


def _as_pandas(frame: Frame, columns: list[str]) -> pd.DataFrame:
    if isinstance(frame, pa.Table):
        return frame.select(columns).to_pandas()
    if isinstance(frame, pd.DataFrame):
        return frame[columns]
    return pd.DataFrame({name: frame[name] for name in columns})
