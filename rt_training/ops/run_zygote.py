"""The warm process behind :class:`rt_training.ops.run_launcher.ForkserverRunLauncher`.

Started as ``python -m rt_training.ops.run_zygote MODULE...``: it imports the given modules, prints ``ready``, then
reads one serialized ``ExecuteRunArgs`` per line on stdin. For each it forks a child that executes the run as
``dagster api execute_run`` would, and prints the child's pid; a line it cannot start a run for gets ``error ...``.
Its finished children are reaped by the kernel. It exits when stdin closes (the launcher's process ended); runs
still executing carry on.

The process is single-threaded (forking is safe) and imports no user code: each run loads the code location
itself, so edited code takes effect from the next run. It only imports: deltalake starts its tokio runtime at first
use, and a child forked after that panics on its first Delta call, so nothing here may touch a table.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback


def _execute(serialized_args: str) -> int:
    """Run ``dagster api execute_run`` in this (forked) process; returns its exit status."""
    from dagster._cli.api import execute_run_command

    try:
        execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _fork_run(serialized_args: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child stays in the daemon's process group (Ctrl-C in its terminal interrupts the run, as with Dagster's
    # own launcher) and lets go of the zygote's pipes.
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run waits for its own subprocesses
        # Termination is a SIGINT (see RtRunLauncher.terminate): it must interrupt the run even when the daemon was
        # started with SIGINT ignored (a background job of a script, nohup), which its children would inherit.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # the run's prints go where the zygote's errors go (the daemon's log)
        status = _execute(serialized_args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a missing optional module only costs its import in each run
            print(f"run zygote: cannot preload {name}: {exc}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished runs are reaped by the kernel, never zombies
    out = sys.stdout
    print("ready", file=out, flush=True)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                print(_fork_run(line), file=out, flush=True)
            except OSError as exc:
                print(f"error {exc}", file=out, flush=True)
    except KeyboardInterrupt:  # Ctrl-C in the daemon's terminal reaches its whole process group
        return


if __name__ == "__main__":
    main(sys.argv[1:])
