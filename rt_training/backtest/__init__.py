"""Backtests: a user's history replayed through the real pipeline, step by step in event time.

:func:`~rt_training.backtest.runner.run_backtest` produces each step's events to a local topic, ingests them with
the micro-batch code, scores them with the champion in force before the step (prequential evaluation) beside a
static and a periodic baseline, then lets the platform update as its policies say.
"""

from rt_training.backtest.runner import BacktestConfig, BacktestResult, run_backtest

__all__ = ["BacktestConfig", "BacktestResult", "run_backtest"]
