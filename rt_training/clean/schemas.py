"""The schemas cleaning reads (bronze) and writes (silver, dead letters): defined once, in the lake's tables."""

from __future__ import annotations

from rt_training.lake.tables import BRONZE_SCHEMA, DEAD_LETTER_SCHEMA, silver_schema

META_SOURCES = ("topic", "partition", "offset", "ingested_at")
"""The bronze column each silver meta column (``META_COLUMNS``) is copied from."""

__all__ = ["BRONZE_SCHEMA", "DEAD_LETTER_SCHEMA", "META_SOURCES", "silver_schema"]
