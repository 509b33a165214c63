"""Every new field type end to end: Kafka → the ingest sensor and job → bronze → silver (bad values → dead
letters with their reasons) → the training set (real sampler, with a mixture by group) → feature state →
the batch dict's tensors → a trained model.

The spec has a byte-tokenized text, string/float/int lists (learned, fixed-size-hashed), a vector, int, bool and
learned string categoricals, a numeric feature without statistics and a multiclass label: nothing hand-typed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import torch

from rt_training.features.state import fit_feature_state
from rt_training.ingest.batch import LakeLocation
from rt_training.sampling.training_set import update_training_set
from rt_training.spec import parse_spec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.producer import produce
from rt_training.training.data import read_training_rows, tensors_from_arrow
from rt_training.training.loop import train
from rt_training_tests.ingest_support import Daemon, definitions, read_table, resources
from rt_training_tests.test_synthetic_typed import TYPED_SPEC

START_MS = (int(time.time()) - 3600) * 1000

torch.set_num_threads(1)


def test_text_list_vector_and_typed_categoricals_from_kafka_to_tensors(
    kafka_broker: KafkaSettings, topic_factory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=3)
    raw = {**TYPED_SPEC, "source": {"topic": topic, "partitions": 3}}
    raw["ingest"] = {"min_records": 1, "max_records_per_run": 5000}
    raw["training"] = {
        "holdout_window_s": 1,
        "epochs": 2,
        "batch_size": 256,
    }  # 6,000 events: 6 s of event time
    spec = parse_spec(raw)
    sent = produce(kafka_broker, spec, topic, count=6000, bad_ratio=0.1, seed=3, start_ms=START_MS)
    assert {"wrong_type", "wrong_dimension", "out_of_range"} <= set(sent.bad)

    daemon = Daemon(
        definitions(spec, kafka_broker, tmp_path),
        dg.DagsterInstance.ephemeral(),
        resources(kafka_broker, tmp_path),
    )
    daemon.catch_up()
    assert all(r.success for r in daemon.results)
    lake = LakeLocation(str(tmp_path))
    silver, dead = read_table(lake, spec, "silver"), read_table(lake, spec, "dead_letters")
    assert Counter(dead.column("reason").to_pylist()) == Counter(dict(sent.bad))
    assert silver.num_rows == 6000 - sum(sent.bad.values())
    types = {f.name: str(f.type) for f in silver.schema}
    assert (types["note"], types["embedding"]) == ("string", "list<element: float>")
    assert (types["viewed"], types["ratings"], types["codes"]) == (
        "list<element: string>",
        "list<element: double>",
        "list<element: int64>",
    )

    update = update_training_set(spec, lake)
    info = update.current
    assert info is not None and update.rows_offered > 4000
    meta = update.metadata()
    groups = [k for k in meta if k.startswith("mixture_target_")]
    assert groups and abs(sum(meta[k] for k in groups) - 1.0) < 1e-6

    rows = read_training_rows(info.uri, info.version, spec)
    state = fit_feature_state(spec, rows, None, cold_start=True, seed=0)
    data = tensors_from_arrow(rows, spec, state)
    n = len(data)
    x = data.inputs
    assert x["amount"].dtype == torch.float32 and x["amount"].shape == (n,)
    # Fitted, not typed: the standardized feature has mean 0 and std 1 over the rows it was fitted on.
    assert abs(float(x["amount"].mean())) < 1e-4 and abs(float(x["amount"].std()) - 1.0) < 1e-2
    for name in ("tier", "member", "region"):
        assert x[name].dtype == torch.int64 and x[name].shape == (n,)
    # A bool field's vocabulary is learned from its two values: rows 0 (null) and the OOV bucket stay unused.
    assert set(x["member"].unique().tolist()) == {2, 3}
    assert x["note"].shape == (n, 64) and x["note__mask"].dtype == torch.bool
    first = pc.utf8_length(rows.column("note")).to_numpy(zero_copy_only=False)
    # Byte tokens: BOS + the UTF-8 bytes (ASCII here) + EOS, cut at 64.
    assert (x["note__mask"].sum(dim=1).numpy() == np.minimum(first + 2, 64)).all()
    viewed = rows.column("viewed").to_pylist()
    lengths = np.array([0 if v is None else min(len(v), 32) for v in viewed])
    assert x["viewed"].shape == (n, 32) and (x["viewed__mask"].sum(dim=1).numpy() == lengths).all()
    assert x["ratings"].dtype == torch.float32 and x["codes"].max() <= 16
    assert x["embedding"].shape == (n, 4)
    assert torch.allclose(x["embedding"][0], torch.tensor(rows.column("embedding")[0].as_py()))
    assert data.label.dtype == torch.int64 and set(data.label.unique().tolist()) <= {0, 1, 2}
    assert state.num_classes == 3

    result = train(spec, state, *data.split(0.1, seed=0), log_every=0)
    assert result.steps > 0 and result.loss_last < result.loss_first
