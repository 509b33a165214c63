"""A topic backfilled with three days of 2018 history (late, too-late and duplicated events among them) through
``produce --from``'s sender, then live events: every window of the pipeline follows event time.

Events are one a minute from ``D1``; the file is written in arrival order on a one-partition topic, so offsets are
arrival order and each micro-batch's reference watermark is exactly the newest event time of the batches before
it, less the 5 minutes of allowed lateness. Arrival order (lines of the file):

- batch 1 (1,440 lines): events 0-1289 and 1340-1494 (events 10-14 are held back, see batch 3);
- batch 2 (1,440 lines): events 1290-1339 (late: 155 to 204 minutes behind batch 1's newest event, so below its
  reference), then 1495-2884;
- batch 3: events 2885-4319, then events 10-14 (about 2,870 minutes behind the reference: more than the 40 h max
  lateness, too late), a resend of event 2000 (879 minutes behind, within the one-day duplicate history: a
  duplicate) and a resend of event 1000 (beyond the duplicate history, though not too late: kept as a late row,
  the documented bound).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from rt_training.defs.factory import build_definitions
from rt_training.eventtime import read_event_clock
from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.spec import PipelineSpec
from rt_training.stream.file_producer import send_records
from rt_training.stream.file_source import read_records
from rt_training.stream.planner import OffsetRange
from rt_training.stream.producer import produce
from rt_training.stream.synthetic import EventGenerator, SimulatedClock
from rt_training_tests.ingest_support import resources, spec_for

D1 = dt.datetime(2018, 5, 1, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
EVENTS = 3 * 1440
LATENESS_S = 300.0
TS = pa.timestamp("us", tz="UTC")


def backfill_spec(topic: str) -> PipelineSpec:
    spec = spec_for(topic, partitions=1)
    return spec.model_copy(
        update={
            "ingest": spec.ingest.model_copy(update={"dedup_history_s": 86400.0}),
            "time": spec.time.model_copy(
                update={"allowed_lateness": LATENESS_S, "max_lateness": 40 * 3600.0}
            ),
            "training": spec.training.model_copy(
                update={"holdout_window_s": 6 * 3600.0, "epochs": 3, "batch_size": 256}
            ),
            "sampling": spec.sampling.model_copy(update={"capacity": 2000}),
        }
    )


def history_lines(spec: PipelineSpec) -> tuple[list[bytes], list[int]]:
    """The backfill file's lines in arrival order, and where each micro-batch ends (line counts)."""
    clock = SimulatedClock(int(D1.timestamp() * 1000), rate=1 / 60)
    values = list(EventGenerator(spec, 21, clock=clock).generate(EVENTS).values)
    first = values[:10] + values[15:1290] + values[1340:1495]
    second = values[1290:1340] + values[1495:2885]
    third = values[2885:] + values[10:15] + [values[2000], values[1000]]
    assert len(first) == len(second) == 1440
    return first + second + third, [1440, 2880, len(first) + len(second) + len(third)]


def meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (mat,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.slow
def test_backfilled_history_then_live_events(kafka_broker, topic_factory, tmp_path: Path) -> None:
    topic = topic_factory(partitions=1)
    spec = backfill_spec(topic)
    lake = LakeLocation(str(tmp_path / "lake"))
    lines, ends = history_lines(spec)
    items = read_records(io.BytesIO(b"\n".join(lines) + b"\n"), "jsonl", spec, spec.id_field)
    sent = send_records(kafka_broker, spec, topic, items, source="history.jsonl")
    assert sent.sent == len(lines)

    reports = []
    start = 0
    for i, end in enumerate(ends):
        reports.append(
            run_micro_batch(kafka_broker, spec, lake, [OffsetRange(topic, 0, start, end)], f"b{i}")
        )
        start = end
    # Each batch is judged against the newest event time before it, less the allowed lateness.
    assert reports[0].reference.watermark is None
    assert reports[1].reference.max_event_time == D1 + 1494 * MINUTE
    assert reports[2].reference.max_event_time == D1 + 2884 * MINUTE
    assert [r.clean.lateness.late_rows for r in reports] == [0, 50, 1]
    assert reports[1].clean.lateness.late_by_max_s == pytest.approx((1494 - 1290) * 60 - LATENESS_S)
    assert reports[2].clean.reason_counts.get("too_late") == 5
    assert reports[2].clean.reason_counts.get("duplicate_id") == 1
    silver = DeltaTable(lake.uri(spec.name, "silver")).to_pyarrow_table()
    assert silver.num_rows == len(lines) - 6  # the too-late five and the duplicate
    resent = json.loads(lines[-1])[spec.id_field]
    assert pc.sum(pc.equal(silver[spec.id_field], resent)).as_py() == 2  # beyond the duplicate history

    # The first champion: the cut is 6 h of event time before the watermark, whatever the wall clock says.
    clock = read_event_clock(spec, lake)
    assert clock.watermark == D1 + (EVENTS - 1) * MINUTE - dt.timedelta(seconds=LATENESS_S)
    defs = build_definitions(spec, resources(kafka_broker, tmp_path / "lake"))
    instance = dg.DagsterInstance.ephemeral()
    res = {"lake": resources(kafka_broker, tmp_path / "lake")["lake"]}
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=res)
    (request,) = defs.get_sensor_def("first_champion_sensor")(context).run_requests
    training = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance,
        tags=request.tags,
        run_config={"ops": {"model_candidate": {"config": {"threads": 1, "log_every": 0}}}},
    )
    assert training.success
    offered, gate = meta(training, "training_set"), meta(training, "champion_model")
    cut = clock.cut(spec.training.holdout_window_s)
    assert offered["cut_time"] == cut.isoformat() and offered["watermark"] == clock.watermark.isoformat()
    up_to_cut = pc.sum(pc.less_equal(silver[spec.time_field], pa.scalar(cut, TS))).as_py()
    assert offered["rows_offered"] + offered["duplicates_dropped"] == up_to_cut
    # The newest 6 h + 5 min of 2018 are the held-out window: 365 events, one a minute.
    assert gate["holdout_rows"] == 365 and gate["decision"] == "promoted"

    # Live events: nothing is late against a 2018 reference, and the watermark jumps to the present.
    produce(kafka_broker, spec, topic, count=600, seed=22)
    live = run_micro_batch(
        kafka_broker, spec, lake, [OffsetRange(topic, 0, ends[-1], ends[-1] + 600)], "live"
    )
    assert live.clean.lateness.late_rows == 0 and live.clean.silver_rows == 600
    now = read_event_clock(spec, lake)
    assert abs(now.watermark_s + LATENESS_S - dt.datetime.now(dt.UTC).timestamp()) < 120
    # The held-out 2018 rows are now far behind the cut: the next training set takes them, once.
    update = meta(
        defs.resolve_job_def("training_set_job").execute_in_process(instance=instance), "training_set"
    )
    assert update["rows_offered"] == 365 and update["duplicates_dropped"] == 0
    assert update["cut_unix_s"] == pytest.approx(now.watermark_s - spec.training.holdout_window_s)
