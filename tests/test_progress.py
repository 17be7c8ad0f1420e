"""Signs of life: a bar on a terminal (a real pseudo-terminal here), one line per step and
a done line on a log, nothing when off; the training curve says why training stopped."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from directrec import progress as P
from directrec.evaluate.report import plot_training_curve, stop_caption


def test_off_says_nothing(capsys):
    with P.Steps("work", 10, on=False) as bar:
        bar.advance(10)
    with P.stage("fit", on=False):
        pass
    assert capsys.readouterr().err == ""


def test_on_a_log_a_counted_step_says_start_progress_and_end(capsys, monkeypatch):
    monkeypatch.setattr(P, "LOG_EVERY_S", 0.0)
    with P.Steps("encode item text", 4, unit="items") as bar:
        for _ in range(4):
            bar.advance(1, "ok")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "encode item text: 4 items …"
    assert lines[1].startswith("encode item text: 1/4  ok") and "ETA" in lines[1]
    assert len(lines) == 5 and lines[-1].startswith("encode item text: done in ")


def test_on_a_log_a_stage_says_start_and_end(capsys):
    with P.stage("[ease] fit"):
        time.sleep(0.01)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[ease] fit …" and err[1].startswith("[ease] fit: done in 0.")


def _under_a_pty(code: str) -> str:
    """Run `code` in a fresh Python whose stderr is a pseudo-terminal; what it drew."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=child, stdout=child, stderr=child, env=env
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_a_counted_step_draws_a_bar():
    drawn = _under_a_pty(
        "from directrec.progress import Steps\n"
        "with Steps('generate sasrec-ce', 3, unit='users') as b:\n"
        "    [b.advance(1) for _ in range(3)]\n"
    )
    assert "generate sasrec-ce" in drawn and "3/3" in drawn and "━" in drawn


def test_on_a_terminal_training_draws_its_epoch_bar(tmp_path):
    drawn = _under_a_pty(
        "from directrec.models.training import Progress\n"
        "p = Progress('sasrec-ce', 2, 0, True)\n"
        "p.epoch({'epoch': 1, 'loss': 1.5, 'seconds': 0.1}, 0.1, 0)\n"
        "p.epoch({'epoch': 2, 'loss': 1.25, 'seconds': 0.1, 'valid_ndcg@10': 0.3}, 0.2, 0)\n"
        "p.close()\n"
    )
    assert "2/2" in drawn and "loss 1.2500" in drawn and "valid NDCG@10 0.3000" in drawn


def test_the_training_curve_marks_its_points_and_says_why_it_stopped(tmp_path):
    log = [{"epoch": e, "loss": 3.0 - e / 10} for e in (1, 2, 3)]
    log[1]["valid_ndcg@10"] = 0.1
    caption = plot_training_curve(log, tmp_path / "c.png", "m", "patience", 2)
    assert (
        caption == "stopped after 3 epochs: validation stopped improving (patience); best epoch 2"
    )
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert "the time budget ran out" in stop_caption("time budget", None, 1)
    assert stop_caption("epochs", 5, 5).startswith("stopped after 5 epochs: all epochs ran")


def test_evaluation_reports_progress_on_a_log(capsys, planted):
    from directrec.data.split import leave_one_out
    from directrec.evaluate.protocol import evaluate
    from directrec.models import create

    fit, seen, targets = leave_one_out(planted.interactions).stage("test")
    model = create("pop").fit(fit)
    evaluate(model, fit, targets, (10,), seen=seen, progress=True, batch_size=16)
    err = capsys.readouterr().err
    assert f"evaluate pop: {len(targets):,} users …" in err and "evaluate pop: done in" in err
