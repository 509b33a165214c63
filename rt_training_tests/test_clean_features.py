"""Feature checks at cleaning (silver holds raw typed fields, no feature columns), and the stable hash of
categories pinned across processes and releases."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from clean_support import SENSOR_SPEC, bronze, event, reading

from rt_training.clean import clean_batch, stable_hash64
from rt_training.spec import load_spec, parse_spec

DEMO = load_spec()
SENSORS = parse_spec(SENSOR_SPEC)
MASK64 = 2**64 - 1

PINNED = {
    "": 0,
    "a": 12447961245826247199,
    "b": 12476296068999176976,
    "user_1": 4988025882318501645,
    "user_2": 6365179951319193678,
    "ü": 14960435445297375822,
    "日本": 13625072588199150095,
    "x" * 1000: 18054399305061301948,
}
PINNED_1024 = {"": 0, "a": 543, "b": 784, "user_1": 781, "user_2": 78, "ü": 590, "日本": 527, "x" * 1000: 700}


def reference_hash(text: str) -> int:
    """The documented definition, one byte at a time in plain Python (Horner form), for cross-checking."""
    h = 0
    data = text.encode("utf-8")
    for b in data:
        h = (h * 0x100000001B3 + b + 1) & MASK64
    h ^= (len(data) * 0x9E3779B97F4A7C15) & MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def test_silver_holds_the_raw_fields_and_no_feature_columns() -> None:
    result = clean_batch(
        bronze([event(price=10.0, dwell_time_s=0.0, position=2, user_tenure_days=100.0, device="fax")]), DEMO
    )
    assert result.silver.column_names == [
        "_topic",
        "_partition",
        "_offset",
        "_ingested_at",
        *DEMO.schema_.fields,
    ]
    row = result.silver.to_pylist()[0]
    assert (row["price"], row["dwell_time_s"], row["position"], row["user_tenure_days"], row["device"]) == (
        10.0,
        0.0,
        2,
        100.0,
        "fax",
    )


def test_clip_transform_bool_feature_and_null_feature_keep_their_raw_values() -> None:
    values = [
        reading(reading_id=1, temperature=-30.0, is_weekend=True, load=0.0),
        reading(reading_id=2, temperature=55.0, is_weekend=False, load=None),
        reading(reading_id=3, temperature=12.5, is_weekend=True, load=math.e - 1),
    ]
    silver = clean_batch(bronze(values), SENSORS).silver.to_pydict()
    assert silver["temperature"] == [-30.0, 55.0, 12.5]
    assert silver["is_weekend"] == [True, False, True]
    assert silver["load"] == [0.0, None, math.e - 1]
    assert not [name for name in silver if name.startswith(("num__", "cat__"))]


def test_feature_overflowing_float32_with_the_spec_s_mean_and_std_is_out_of_range() -> None:
    spec = parse_spec(
        {
            **SENSOR_SPEC,
            "features": {
                **SENSOR_SPEC["features"],
                "numeric": [{"name": "load", "mean": 0.0, "std": 1e-300}],
            },
        }
    )
    result = clean_batch(bronze([reading(load=1.0)]), spec)
    assert result.dead_letters.select(["reason", "detail"]).to_pylist() == [
        {
            "reason": "out_of_range",
            "detail": "field 'load' value 1.0 must be small enough for a finite float32 feature",
        }
    ]


def test_fitted_statistics_check_only_the_transform() -> None:
    # without mean and std in the spec the scale is fitted later: only log1p's domain is known at cleaning
    spec = parse_spec(
        {
            **SENSOR_SPEC,
            "features": {
                **SENSOR_SPEC["features"],
                "numeric": [{"name": "load", "transform": "log1p"}, {"name": "kwh", "std": 1e-300}],
            },
            "label": {"field": "temperature", "kind": "regression"},
        }
    )
    values = [
        reading(reading_id=1, load=1e300),
        reading(reading_id=2, load=-1.0),
        reading(reading_id=3, load=-0.5),
    ]
    result = clean_batch(bronze(values), spec)
    assert result.silver.column("load").to_pylist() == [1e300, -0.5]
    assert result.dead_letters.select(["offset", "reason", "detail"]).to_pylist() == [
        {
            "offset": 1,
            "reason": "out_of_range",
            "detail": "field 'load' value -1.0 must be > -1, the domain of log1p",
        }
    ]


def test_stable_hash_pinned_values() -> None:
    hashes = stable_hash64(pa.array(list(PINNED)))
    assert [int(h) for h in hashes] == list(PINNED.values())
    assert (stable_hash64(pa.array(list(PINNED_1024))) % 1024).tolist() == list(PINNED_1024.values())


def test_stable_hash_matches_reference_definition() -> None:
    rng = random.Random(5)
    alphabet = "abcXYZ019_-é日\x00 "
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(300)]
    sliced = pa.array(["pad", *texts, "pad"]).slice(1, len(texts))
    assert [int(h) for h in stable_hash64(sliced)] == [reference_hash(t) for t in texts]


def test_stable_hash_distinguishes_near_identical_strings() -> None:
    texts = ["", "\x00", "\x00\x00", "a", "a\x00", "\x00a", "ab", "ba"]
    assert len({int(h) for h in stable_hash64(pa.array(texts))}) == len(texts)


def test_hashes_handle_nulls_repeats_and_spread_over_buckets() -> None:
    values = pa.array(["user_1", None, "user_1", "user_2"])
    assert (stable_hash64(values) % 1024).tolist() == [781, 0, 781, 78]
    counts = np.bincount(stable_hash64(pa.array([f"user_{i}" for i in range(64_000)])) % 64, minlength=64)
    # 1000 expected per bucket; a fair multinomial stays within +-20% with overwhelming probability
    assert counts.min() > 800 and counts.max() < 1200


@pytest.mark.timeout(60)
def test_hashes_identical_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json, pyarrow as pa; from rt_training.clean.features import stable_hash64; "
        f"print(json.dumps((stable_hash64(pa.array({list(PINNED_1024)!r})) % 1024).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == list(PINNED_1024.values())
