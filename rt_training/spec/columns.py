"""Column names shared by every layer that reads or writes the lake tables.

Silver rows carry the Kafka coordinates (``_topic``, ``_partition``, ``_offset``), ``_ingested_at`` and every
schema field with its declared type (see :func:`rt_training.lake.tables.silver_schema`); silver holds no feature
columns: model inputs are computed from these fields by a fitted feature state (:mod:`rt_training.features`).
"""

META_COLUMNS = ("_topic", "_partition", "_offset", "_ingested_at")
