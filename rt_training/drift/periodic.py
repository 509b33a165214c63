"""Periodic retraining on event time: whether ``training.retrain_every_s`` of event time or
``training.retrain_every_rows`` new silver rows have passed since the last retraining launch or the champion's
training-set cut, whichever is later.

The rule of ``periodic_retraining_sensor`` (:mod:`rt_training.defs.periodic`) and of the backtest: the caller says
when the last retraining launched (the watermark at that launch) and whether one is still running; the decision
itself is :func:`rt_training.drift.trigger.periodic_due`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rt_training.drift.trigger import TriggerDecision
    from rt_training.ingest.batch import LakeLocation
    from rt_training.spec.models import PipelineSpec


def periodic_decision(
    spec: PipelineSpec, lake: LakeLocation, *, now: float, last_launch_at: float | None, in_flight: bool
) -> TriggerDecision | None:
    """Whether a periodic retraining is due at watermark ``now`` (Unix s); ``None`` when the spec sets no period.

    The period counts from ``last_launch_at`` (the watermark of the last retraining launch) or the champion's
    training-set cut, whichever is later; new rows are silver rows with event time after that point.
    """
    from rt_training.drift.reports import NothingToCompare, champion_reference
    from rt_training.drift.trigger import periodic_due
    from rt_training.eventtime import rows_after
    from rt_training.lake.tables import open_table
    from rt_training.training.champion import registry_for

    if spec.training.retrain_every_s is None and spec.training.retrain_every_rows is None:
        return None
    since = last_launch_at
    champion = registry_for(spec, lake).champion()
    if champion is not None:
        with contextlib.suppress(NothingToCompare):
            cut = champion_reference(spec, lake, champion).cut.timestamp()
            since = cut if since is None else max(since, cut)
    new_rows = None
    options = dict(lake.storage_options) if lake.storage_options else None
    silver = open_table(lake.uri(spec.name, "silver"), options)
    if since is not None and silver is not None and spec.training.retrain_every_rows is not None:
        new_rows = rows_after(silver, spec.time_field, dt.datetime.fromtimestamp(since, dt.UTC))
    return periodic_due(policy=spec.training, now=now, since=since, new_rows=new_rows, in_flight=in_flight)
