"""Cleaning: bronze records → silver rows + dead letters, driven by the pipeline spec.

Steps (see :func:`clean_batch`): size check, UTF-8 and JSON decoding (:mod:`.parse`), schema validation
(:mod:`.validate`), feature checks (:mod:`.features`), duplicate ids (:mod:`.dedupe`). Each defect has a reason code
(:class:`Reason`); a record with several gets the first in :data:`PRECEDENCE`.
"""

from rt_training.clean.dedupe import find_duplicates, recent_ids
from rt_training.clean.features import check_features, stable_hash64
from rt_training.clean.parse import JsonParser, ParsedBatch, Parser
from rt_training.clean.pipeline import (
    CleanResult,
    LagStats,
    PreparedBatch,
    clean_batch,
    finish_batch,
    prepare_batch,
)
from rt_training.clean.reasons import PRECEDENCE, Reason
from rt_training.clean.schemas import BRONZE_SCHEMA, DEAD_LETTER_SCHEMA, silver_schema
from rt_training.clean.validate import ARROW_TYPES, validate_fields
from rt_training.lake.tables import field_type

__all__ = [
    "ARROW_TYPES",
    "BRONZE_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "PRECEDENCE",
    "CleanResult",
    "JsonParser",
    "LagStats",
    "ParsedBatch",
    "Parser",
    "PreparedBatch",
    "Reason",
    "check_features",
    "clean_batch",
    "field_type",
    "find_duplicates",
    "finish_batch",
    "prepare_batch",
    "recent_ids",
    "silver_schema",
    "stable_hash64",
    "validate_fields",
]
