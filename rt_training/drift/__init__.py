"""Drift: is the stream still like the data the champion learned from, and should a retraining start?

``detector`` decides drift with Evidently's DataDriftPreset verdicts on numpy (fast enough for every sensor
tick), ``fields`` and ``domain`` judge text, list and vector fields (token distribution and OOV rate, lengths
and elements, mean shift and a domain classifier), ``report`` writes Evidently's own HTML report, ``quality``
compares the champion's metric on recent labelled events with its validation value, and ``trigger`` turns
those signals into a launch decision.
``reports`` runs one check for a pipeline: recent silver against the rows the champion's training set was drawn
from, stored in the ``drift_reports`` table with the HTML report beside it.
"""

from rt_training.drift.detector import (
    ColumnDrift,
    DriftInputError,
    DriftResult,
    choose_stattest,
    detect_drift,
)
from rt_training.drift.quality import QualitySignal, quality_drop
from rt_training.drift.report import EvidentlyVerdicts, evidently_report_html, evidently_verdicts
from rt_training.drift.trigger import TriggerDecision, decide_retraining

__all__ = [
    "ColumnDrift",
    "DriftInputError",
    "DriftResult",
    "EvidentlyVerdicts",
    "QualitySignal",
    "TriggerDecision",
    "choose_stattest",
    "decide_retraining",
    "detect_drift",
    "evidently_report_html",
    "evidently_verdicts",
    "quality_drop",
]
