"""A real ``dagster dev`` (webserver + daemon) for end-to-end tests, its GraphQL API, and Chromium screenshots."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rt_training.cli.demo import TICK_TIMEOUT_ENV, graphql
from rt_training_tests.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]


class DagsterUI:
    """Talks to a running webserver."""

    def __init__(self, url: str) -> None:
        self.url = url

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, query, variables or {}, timeout=30)

    def runs(self, job: str) -> list[dict[str, Any]]:
        """Runs of ``job``, oldest first, with status, times and tags."""
        data = self.graphql(
            """query($job: String!) { runsOrError(filter: {pipelineName: $job}, limit: 200) {
                 ... on Runs { results { runId status creationTime startTime endTime tags { key value } } } } }""",
            {"job": job},
        )
        return sorted(data["runsOrError"]["results"], key=lambda r: r["creationTime"])

    def recent_runs(self, limit: int = 8) -> list[dict[str, Any]]:
        """The newest runs of any job, newest first, with job name and status."""
        data = self.graphql(
            """query($limit: Int!) { runsOrError(limit: $limit) {
                 ... on Runs { results { runId jobName status creationTime } } } }""",
            {"limit": limit},
        )
        return data["runsOrError"]["results"]

    def describe_recent_runs(self, limit: int = 8) -> str:
        """``job status (id), ...`` for the newest runs, for failure messages; what went wrong when the
        webserver does not answer."""
        try:
            runs = self.recent_runs(limit)
        except (OSError, AssertionError) as exc:
            return f"(could not list runs: {exc!r})"
        return ", ".join(f"{r['jobName']} {r['status']} ({r['runId'][:8]})" for r in runs) or "none"

    def materializations(self, *path: str) -> list[dict[str, Any]]:
        """Materializations of an asset, oldest first, with metadata as a plain dict."""
        data = self.graphql(
            """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
                 ... on Asset { assetMaterializations(limit: 200) { runId timestamp metadataEntries {
                   label
                   ... on BoolMetadataEntry { boolValue }
                   ... on TextMetadataEntry { text }
                   ... on FloatMetadataEntry { floatValue }
                   ... on IntMetadataEntry { intValue }
                   ... on PathMetadataEntry { path }
                 } } } } }""",
            {"path": list(path)},
        )
        asset = data["assetOrError"]
        out = []
        for m in asset.get("assetMaterializations") or []:
            meta = {}
            for e in m["metadataEntries"]:
                values = [v for k, v in e.items() if k != "label"]
                meta[e["label"]] = values[0] if values else None
            out.append({"runId": m["runId"], "timestamp": float(m["timestamp"]) / 1000, "metadata": meta})
        return sorted(out, key=lambda m: m["timestamp"])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with code {proc.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer at {url} within {timeout_s:.0f}s")


@contextmanager
def dagster_dev(home: Path, port: int, env: Mapping[str, str], log: Path) -> Iterator[DagsterUI]:
    """Start ``dagster dev`` in its own process group; stop the group with SIGINT (then SIGKILL) at the end,
    never raising from that cleanup."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    full_env = {**TICK_TIMEOUT_ENV, **os.environ, **env, "DAGSTER_HOME": str(home)}
    dagster = Path(sys.executable).parent / "dagster"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, 180, proc)
        yield DagsterUI(url)
    finally:
        stop_process(proc, "dagster dev", sig=signal.SIGINT, timeout_s=60, group=True)


def screenshot(url: str, path: Path, wait_ms: int = 15000) -> Path:
    """A headless Chromium screenshot of ``url`` (Debian's ``chromium``)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("chromium is not installed: apt-get install chromium")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = path.parent / f".chromium-{path.stem}"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1600,1000",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)
    return path
