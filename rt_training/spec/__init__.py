"""The pipeline spec: one YAML file describes a user's stream, features, model and policies."""

from rt_training.spec.columns import META_COLUMNS
from rt_training.spec.loader import SPEC_ENV_VAR, SpecError, load_spec, parse_spec
from rt_training.spec.models import PipelineSpec

__all__ = [
    "META_COLUMNS",
    "SPEC_ENV_VAR",
    "PipelineSpec",
    "SpecError",
    "load_spec",
    "parse_spec",
]
