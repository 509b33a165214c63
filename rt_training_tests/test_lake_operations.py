"""Operations on an ingested lake: the maintenance job keeps offsets; `rt-training ingest status` reports them."""

from __future__ import annotations

import time

import dagster as dg
import yaml
from click.testing import CliRunner

from rt_training.cli.main import cli
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import committed_offsets
from rt_training.lake.maintenance import file_stats
from rt_training.lake.tables import open_table
from rt_training.stream.producer import produce
from rt_training_tests.ingest_support import Daemon, definitions, resources, spec_for

START_MS = (int(time.time()) - 3600) * 1000


def test_maintenance_job_compacts_and_keeps_offsets_and_status_reports_them(
    kafka_broker, topic_factory, tmp_path
):
    topic = topic_factory(partitions=3)
    spec = spec_for(topic, min_records=1, max_records_per_run=500)
    produce(kafka_broker, spec, topic, count=3000, seed=8, start_ms=START_MS, bad_ratio=0.02)
    defs = definitions(spec, kafka_broker, tmp_path)
    daemon = Daemon(defs, dg.DagsterInstance.ephemeral(), resources(kafka_broker, tmp_path))
    assert daemon.catch_up() >= 6
    lake = LakeLocation(str(tmp_path))
    bronze = lake.uri(spec.name, "bronze")
    offsets_before = committed_offsets(bronze, spec.name, topic, [0, 1, 2])
    files_before = file_stats(open_table(bronze)).files
    result = defs.resolve_job_def("maintenance_job").execute_in_process(
        instance=daemon.instance, resources=resources(kafka_broker, tmp_path)
    )
    assert result.success
    assert committed_offsets(bronze, spec.name, topic, [0, 1, 2]) == offsets_before
    assert file_stats(open_table(bronze)).files < files_before
    output = next(e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT")
    meta = output.step_output_data.metadata
    assert meta["bronze.files_after"].value < meta["bronze.files_before"].value == files_before

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    out = CliRunner().invoke(
        cli,
        ["ingest", "status", "--spec", str(spec_file), "--lake", str(tmp_path),
         "--bootstrap-servers", kafka_broker.bootstrap_servers],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    for p, end in offsets_before.items():
        assert f"{p:>9} {end:>10} {end:>10} {0:>8}  in step" in out.output
    assert "last commit silver: 20" in out.output
