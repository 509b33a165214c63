"""The ``rt-training`` command line: operations around the Dagster code location.

Each command group lives in its own module beside this one; heavy libraries are imported inside commands so
``rt-training --help`` stays fast.
"""

from __future__ import annotations

import signal

import click

from rt_training.cli.backtest import backtest
from rt_training.cli.demo import demo
from rt_training.cli.history import history
from rt_training.cli.ingest import ingest
from rt_training.cli.kafka import kafka
from rt_training.cli.metrics import metrics
from rt_training.cli.model import model
from rt_training.cli.produce import produce
from rt_training.cli.spec import spec


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rt-training")
def cli() -> None:
    """rt-training: keep PyTorch models trained on a live Kafka stream."""
    # Ctrl-C (SIGINT) stops every long-running command, also when it was started from a script's background job,
    # which starts with SIGINT ignored: Python then raises no KeyboardInterrupt unless the handler is restored.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


cli.add_command(spec)
cli.add_command(backtest)
cli.add_command(demo)
cli.add_command(history)
cli.add_command(ingest)
cli.add_command(kafka)
cli.add_command(metrics)
cli.add_command(model)
cli.add_command(produce)
