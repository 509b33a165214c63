"""Column names shared by every layer that reads or writes the lake tables.

Silver rows carry the Kafka coordinates (``_topic``, ``_partition``, ``_offset``), ``_ingested_at``, every schema
field with its declared type, and the model-ready features: ``num__<field>`` (float32, transformed and
standardized) and ``cat__<field>`` (int32 index; 0 is "unknown" for vocabularies).
"""

NUMERIC_PREFIX = "num__"
CATEGORICAL_PREFIX = "cat__"
META_COLUMNS = ("_topic", "_partition", "_offset", "_ingested_at")
