"""The pipeline spec: the demo spec loads; each kind of invalid spec names its field and reason."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from rt_training.cli.main import cli
from rt_training.spec import SpecError, load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[1] / "rt_training" / "specs" / "clickstream.yaml"


@pytest.fixture()
def demo_dict() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_loads_by_default() -> None:
    spec = load_spec()
    assert spec.name == "clickstream"
    assert spec.source.topic == "clickstream"
    assert spec.id_field == "event_id"
    assert spec.time_field == "event_time"
    assert spec.numeric_feature_names == ["price", "dwell_time_s", "position", "user_tenure_days", "discount"]
    assert spec.categorical_feature_names == ["device", "category", "country", "user_id", "item_id"]
    assert spec.features.categorical[0].vocabulary == ["mobile", "desktop", "tablet"]
    assert spec.features.categorical[3].hash_buckets == 1024
    assert spec.features.numeric[0].mean == 3.2  # given in the spec: it overrides the fitted mean
    assert spec.training.metric == "auc"
    assert spec.sampling.class_balance == {"0": 0.5, "1": 0.5}


def test_env_var_selects_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_dict: dict) -> None:
    demo_dict["name"] = "other"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(demo_dict))
    monkeypatch.setenv("RT_TRAINING_SPEC", str(path))
    assert load_spec().name == "other"


def test_fingerprint_is_stable_and_sensitive(demo_dict: dict) -> None:
    a = parse_spec(demo_dict)
    b = parse_spec(copy.deepcopy(demo_dict))
    assert a.fingerprint() == b.fingerprint()
    demo_dict["training"]["epochs"] = 9
    assert parse_spec(demo_dict).fingerprint() != a.fingerprint()


def _set(d: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d[int(p)] if isinstance(d, list) else d[p]
    if isinstance(d, list):
        d[int(last)] = value
    elif value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("name", "Bad Name!", "name", "String should match pattern"),
        ("source.topic", "no spaces allowed", "source.topic", "Kafka topic name"),
        ("source.partitions", 0, "source.partitions", "greater than or equal to 1"),
        ("source.retention", 5, "source.retention", "unknown field"),
        ("schema.id_field", "nope", "schema", "id_field 'nope' is not one of the schema fields"),
        ("schema.time_field", "price", "schema", "must have type timestamp"),
        ("schema.fields.price.type", "decimal", "schema.fields.price.type", "Input should be"),
        ("schema.fields.price.min", 50000.0, "schema.fields.price", "greater than max"),
        ("schema.fields.device.min", 1, "schema.fields.device", "min/max apply to int and float"),
        (
            "features.numeric.0.name",
            "ghost",
            "<root>",
            "features.numeric[0].name 'ghost' is not a schema field",
        ),
        ("features.numeric.0.std", 0, "features.numeric[0].std", "greater than 0"),
        ("features.categorical.1.hash_buckets", 8, "features.categorical[1]", "at most one of vocabulary"),
        ("label.field", "missing", "<root>", "label.field 'missing' is not a schema field"),
        ("label.field", "price", "<root>", "label leakage"),
        ("training.metric", "rmse", "<root>", "does not apply to label.kind binary; use one of auc"),
        ("schema.fields.price.type", "list", "schema.fields.price", "a list field needs items"),
        ("schema.fields.price.type", "vector", "schema.fields.price", "a vector field needs dim"),
        ("schema.fields.device.dim", 4, "schema.fields.device", "dim applies to vector fields"),
        (
            "features.text",
            [{"name": "price"}],
            "<root>",
            "a text feature needs a field of type text or string",
        ),
        ("features.categorical.0.name", "price", "<root>", "needs a field of type string or int or bool"),
        ("label.kind", "language_model", "<root>", "list 'clicked' under features.text"),
        ("model.builtin", "causal_lm", "<root>", "causal_lm needs label.kind language_model"),
        ("model.n_heads", 3, "model", "must be a multiple of n_heads"),
        ("sampling.mixture", {"by": "ghost"}, "<root>", "sampling.mixture.by 'ghost' is not a schema field"),
        ("sampling.mixture", {"by": "price"}, "<root>", "groups come from a string, int or bool field"),
        (
            "sampling.mixture",
            {"by": "device", "shares": {"mobile": 1.5}},
            "sampling.mixture.shares",
            "sum to at most 1",
        ),
        ("training.metric", "f1", "training.metric", "Input should be"),
        ("model.factory", "not a path", "model", "package.module:function"),
        ("sampling.class_balance", {0: 0.7, 1: 0.7}, "sampling.class_balance", "sum to 1"),
        ("ingest.on_data_loss", "ignore", "ingest.on_data_loss", "Input should be 'fail' or 'skip'"),
        ("drift.drift_share", 1.5, "drift.drift_share", "less than or equal to 1"),
        ("label", _DELETE, "label", "Field required"),
        (
            "sampling.strategy",
            "time_biased",
            "<root>",
            "drift.on_drift_recency_half_life_s (10m) cannot act with sampling.strategy 'time_biased'",
        ),
        ("sampling.strategy", "uniform", "<root>", "or remove drift.on_drift_recency_half_life_s"),
        ("training.retrain_every_s", "0s", "training.retrain_every_s", "greater than 0"),
        ("training.retrain_every_rows", 0, "training.retrain_every_rows", "greater than or equal to 1"),
    ],
)
def test_invalid_spec_names_field(demo_dict: dict, path: str, value: Any, field: str, message: str) -> None:
    _set(demo_dict, path, value)
    with pytest.raises(SpecError) as info:
        parse_spec(demo_dict, "test.yaml")
    fields = [f for f, _ in info.value.errors]
    assert field in fields, info.value.errors
    assert any(message in m for f, m in info.value.errors if f == field), info.value.errors
    assert "invalid pipeline spec test.yaml" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert info.value.errors[0][0] == "<yaml>"
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(top)


def test_a_second_spec_with_other_fields_is_valid() -> None:
    spec = parse_spec(
        {
            "name": "sensors",
            "source": {"topic": "plant.sensors", "partitions": 2},
            "schema": {
                "id_field": "reading_id",
                "time_field": "measured_at",
                "fields": {
                    "reading_id": {"type": "string"},
                    "measured_at": {"type": "timestamp"},
                    "temperature": {"type": "float", "min": -50, "max": 150},
                    "line": {"type": "string"},
                    "yield_pct": {"type": "float", "min": 0, "max": 100},
                },
            },
            "features": {
                "numeric": [{"name": "temperature", "mean": 40, "std": 15}],
                "categorical": [{"name": "line", "vocabulary": ["a", "b"]}],
            },
            "label": {"field": "yield_pct", "kind": "regression"},
            "training": {"metric": "rmse"},
        }
    )
    assert spec.label.kind == "regression"
    assert spec.model.builtin == "mlp"


def test_periodic_retraining_settings_take_durations(demo_dict: dict) -> None:
    demo_dict["training"].update(retrain_every_s="30d", retrain_every_rows=50_000)
    spec = parse_spec(demo_dict, "test.yaml")
    assert (spec.training.retrain_every_s, spec.training.retrain_every_rows) == (30 * 86400.0, 50_000)
    demo_dict["sampling"]["strategy"] = "time_biased"
    demo_dict["drift"]["on_drift_recency_half_life_s"] = None
    assert parse_spec(demo_dict, "test.yaml").sampling.strategy == "time_biased"


FACTORY_MODULE = "rt_spec_user_models"


@pytest.fixture()
def factory_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """User factory modules on sys.path: a good one, one importing a missing package, one failing on import."""
    (tmp_path / f"{FACTORY_MODULE}.py").write_text(
        "SETTINGS = {'width': 4}\n\ndef make(spec, features):\n    return None\n"
    )
    (tmp_path / "rt_spec_needs_dep.py").write_text("import rt_spec_absent_dependency\n")
    (tmp_path / "rt_spec_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in (FACTORY_MODULE, "rt_spec_needs_dep", "rt_spec_broken"):
        sys.modules.pop(name, None)


def _validate_with_factory(tmp_path: Path, demo_dict: dict, factory: str) -> Result:
    demo_dict["model"] = {"factory": factory}
    path = tmp_path / "with_factory.yaml"
    path.write_text(yaml.safe_dump(demo_dict))
    return CliRunner().invoke(cli, ["spec", "validate", str(path)])


def test_spec_validate_resolves_a_good_factory(factory_modules: Path, demo_dict: dict) -> None:
    result = _validate_with_factory(factory_modules, demo_dict, f"{FACTORY_MODULE}:make")
    assert result.exit_code == 0, result.output
    assert f"model factory {FACTORY_MODULE}:make" in result.output
    assert "spec 'clickstream' is valid" in result.output


@pytest.mark.parametrize(
    ("factory", "messages"),
    [
        (
            "rt_spec_no_such_pkg.models:make",
            [
                "cannot import module 'rt_spec_no_such_pkg.models' (no module named 'rt_spec_no_such_pkg')",
                "install the package that provides it, add its directory to PYTHONPATH",
            ],
        ),
        (
            f"{FACTORY_MODULE}:absent",
            [f"module '{FACTORY_MODULE}' has no attribute 'absent'", "fix the function name in the spec"],
        ),
        (
            f"{FACTORY_MODULE}:SETTINGS",
            [f"{FACTORY_MODULE}.SETTINGS is a dict, not callable", "factory(spec, feature_info)"],
        ),
        (
            "rt_spec_needs_dep:make",
            ["it imports 'rt_spec_absent_dependency', which is not installed"],
        ),
        (
            "rt_spec_broken:make",
            ["importing it raised RuntimeError: boom at import; fix the module"],
        ),
    ],
)
def test_spec_validate_reports_an_unusable_factory(
    factory_modules: Path, demo_dict: dict, factory: str, messages: list[str]
) -> None:
    result = _validate_with_factory(factory_modules, demo_dict, factory)
    assert result.exit_code == 1
    source = str(factory_modules / "with_factory.yaml")
    assert f"Error: invalid pipeline spec {source}:\n  - model.factory: '{factory}': " in result.output
    for message in messages:
        assert message in result.output, result.output


def test_loading_a_spec_does_not_import_its_factory(factory_modules: Path, demo_dict: dict) -> None:
    demo_dict["model"] = {"factory": f"{FACTORY_MODULE}:make"}
    path = factory_modules / "with_factory.yaml"
    path.write_text(yaml.safe_dump(demo_dict))
    assert load_spec(path).model.factory == f"{FACTORY_MODULE}:make"
    assert FACTORY_MODULE not in sys.modules
    demo_dict["model"] = {"factory": f"{FACTORY_MODULE}:absent"}
    with pytest.raises(SpecError) as info:
        parse_spec(demo_dict, "x.yaml", check_factory=True)
    assert [field for field, _ in info.value.errors] == ["model.factory"]
    assert FACTORY_MODULE in sys.modules
