"""Column names shared by every layer that reads or writes the lake tables.

Silver rows carry the Kafka coordinates (``_topic``, ``_partition``, ``_offset``), ``_ingested_at`` and every
schema field with its declared type (see :func:`rt_training.lake.tables.silver_schema`); silver holds no feature
columns. ``NUMERIC_PREFIX`` and ``CATEGORICAL_PREFIX`` name the model inputs of the tabular model code.
"""

NUMERIC_PREFIX = "num__"
CATEGORICAL_PREFIX = "cat__"
META_COLUMNS = ("_topic", "_partition", "_offset", "_ingested_at")
