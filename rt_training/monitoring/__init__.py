"""Monitoring: pipeline metrics for Prometheus, read from the lake's Delta tables and from Kafka.

:mod:`~rt_training.monitoring.snapshot` gathers the numbers, :mod:`~rt_training.monitoring.exporter` serves
them (``rt-training metrics serve``), :mod:`~rt_training.monitoring.run_events` is the table run failures are
counted from. Alert rules and dashboards live in ``infra/prometheus`` and ``infra/grafana``.
"""
