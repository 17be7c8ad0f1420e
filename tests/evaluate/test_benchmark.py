"""The benchmark's isolated workers: one that loses its parent stops instead of training on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from typer.testing import CliRunner

from directrec.cli import app
from tests.conftest import planted_frames


def test_a_killed_benchmark_takes_its_worker_with_it(tmp_path):
    """SIGTERM to `directrec benchmark` (a supervisor's stop, `kill`) ends the spawned
    worker that fits the model too, within seconds, rather than leaving it training."""
    inter, _ = planted_frames(n_users=60)
    inter[["user_id", "item_id", "timestamp"]].to_csv(tmp_path / "log.csv", index=False)
    db = tmp_path / "s.duckdb"
    res = CliRunner().invoke(
        app,
        ["ingest", "--format", "csv", "--interactions", str(tmp_path / "log.csv"), "--db", str(db)],
    )
    assert res.exit_code == 0, res.output
    cmd = [sys.executable, "-m", "directrec", "benchmark", "--db", str(db), "--models", "sasrec-ce"]
    cmd += ["--out", str(tmp_path / "b"), "--no-progress", "--set", "sasrec-ce.epochs=100000"]
    cmd += ["--set", "sasrec-ce.patience=100000", "--set", "sasrec-ce.threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = None
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while worker is None and time.monotonic() < deadline:  # the sasrec-ce worker, training
            for child in parent.children():
                if "spawn_main" in " ".join(child.cmdline()) and child.cpu_percent(0.5) > 0:
                    worker = child
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert worker is not None, "no training worker appeared"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        gone, alive = psutil.wait_procs([worker], timeout=10)
        assert worker in gone and not alive
    finally:
        proc.kill()
        if worker is not None and worker.is_running():
            worker.kill()
