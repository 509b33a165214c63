"""The pipeline spec: one YAML file describes a user's stream, features, model and policies."""

from rt_training.spec.columns import META_COLUMNS
from rt_training.spec.loader import (
    SPEC_ENV_VAR,
    SpecError,
    bundled_specs,
    load_spec,
    parse_spec,
    resolve_spec_path,
)
from rt_training.spec.models import PipelineSpec

__all__ = [
    "META_COLUMNS",
    "SPEC_ENV_VAR",
    "PipelineSpec",
    "SpecError",
    "bundled_specs",
    "load_spec",
    "parse_spec",
    "resolve_spec_path",
]
