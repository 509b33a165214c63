"""Shared helpers of the benchmark scripts: every result file records the machine it was measured on."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU count, platform and interpreter, plus versions of the numeric libraries the benchmark imported."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
    }
    for module in ("numpy", "torch", "pyarrow", "deltalake", "kafka"):
        if module in sys.modules:
            info[f"{module}_version"] = getattr(sys.modules[module], "__version__", "unknown")
    return info


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with machine info and a UTC ``measured_at`` to ``benchmarks/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path
