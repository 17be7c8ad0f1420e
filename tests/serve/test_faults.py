"""Faults a deploy must survive: `kill -9` of the server in the middle of a swap, of an
update job in the middle of training, of a batch generation in the middle of writing,
and a registry whose disk fills during a publish. After each, what was complete before
is complete and served; nothing half-written is visible."""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest
from directrec.serve import registry
from tests.conftest import planted_frames
from tests.data.test_full_disk import assert_disk_full_error, cli, small_disk
from tests.serve.conftest import TOKEN, Server

CLI = [sys.executable, "-m", "directrec.cli"]


def registry_state(reg: Path) -> tuple[list[str], str, dict[str, str]]:
    """(versions, CURRENT, sha256 of every file of every version): the registry as a
    reader sees it, each version verified against its manifest."""
    names = registry.versions(reg)
    for v in names:
        registry.verify(reg / v)
    files = {
        f"{v}/{f.name}": registry.sha256(f) for v in names for f in sorted((reg / v).iterdir())
    }
    return names, registry.current(reg), files


def assert_serves_full_lists(s: Server, version: str) -> None:
    ready = s.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == version, ready.text
    for user in ("u0", "u7", "u42"):
        r = s.client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
        assert r.status_code == 200, r.text
        assert r.headers["X-Model-Version"] == version
        items = [it["item_id"] for it in r.json()["items"]]
        assert len(items) == 10 and len(set(items)) == 10, items


def kill_9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    """The process's output, line by line, read on a thread (so a line can trigger a kill)."""
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in iter(proc.stdout.readline, b""):
            q.put(line.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return q


def wait_for(q: queue.Queue, text: str, seconds: float) -> str:
    deadline = time.time() + seconds
    seen = []
    while time.time() < deadline:
        try:
            line = q.get(timeout=0.05)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no {text!r} within {seconds}s; output:\n{''.join(seen)[-3000:]}")


@pytest.mark.parametrize("moment", ["request-sent", "canary-passed"])
def test_kill_9_during_a_swap_restarts_on_a_complete_version(own_world, moment):
    db, reg = own_world
    v1 = registry.current(reg)
    v2 = registry.publish(reg / v1, reg, make_current=False)  # a second, complete version
    before = registry_state(reg)
    s = Server(reg, db, "--canary-users", "120")
    out = lines_of(s.proc)
    request = (
        f"POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f'Content-Type: application/json\r\nContent-Length: 19\r\n\r\n{{"version":"{v2}"}}'
    )
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as conn:
            conn.sendall(request.encode())
            if moment == "canary-passed":  # the new version checked, the swap under way
                wait_for(out, f"canary passed for {v2}", 30)
            kill_9(s.proc)
            try:
                answer = conn.recv(65536)
            except ConnectionResetError:
                answer = b""
        if moment == "request-sent":  # killed while the canary ran: the swap was cut off
            assert b"HTTP/1.1 200" not in answer, answer
        # after the canary only the warm-up and the swap itself remain: on a busy machine
        # the kill may land after them; either way the registry must be as it was
    finally:
        s.client.close()
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
    assert registry_state(reg) == before  # a swap in the server writes nothing
    s = Server(reg, db)
    try:
        assert_serves_full_lists(s, v1)  # CURRENT, whole
        r = s.client.post(
            "/v1/admin/reload", json={"version": v2}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 200, r.text  # the new version is intact too
        assert_serves_full_lists(s, v2)
    finally:
        s.stop()


@pytest.mark.parametrize("moment", ["training", "publishing"])
def test_kill_9_during_an_update_job_leaves_the_registry_and_service_as_they_were(
    own_world, moment
):
    db, reg = own_world
    v1 = registry.current(reg)
    before = registry_state(reg)
    s = Server(reg, db)
    epochs = "100000" if moment == "training" else "1"
    try:
        job = subprocess.Popen(
            [*CLI, "update", "--model", str(reg), "--db", str(db), "--epochs", epochs],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if moment == "training":
            time.sleep(8)  # imports, loading, and well into its epochs
        else:  # trained: saving, canarying and publishing in the registry's temp dir
            deadline = time.time() + 50
            while time.time() < deadline and not any(
                p.name.startswith(".update.") for p in reg.iterdir()
            ):
                assert job.poll() is None, job.stdout.read().decode()
                time.sleep(0.005)
        assert job.poll() is None, job.stdout.read().decode()  # still at work
        kill_9(job)
        job.stdout.close()
        after = registry_state(reg)  # every version listed is complete (verified)
        assert after[1] == v1 and set(before[2].items()) <= set(after[2].items())
        if moment == "training":
            assert after == before
        # only dot-named leftovers, which the registry does not take for versions
        names = sorted(p.name for p in reg.iterdir())
        assert all(n.startswith(".") or n in (*after[0], "CURRENT") for n in names), names
        time.sleep(1.5)  # three watch intervals: nothing new to swap to
        assert_serves_full_lists(s, v1)
    finally:
        s.stop()


def test_kill_9_during_generate_leaves_no_partial_output(world, tmp_path):
    _, reg = world
    inter, items = planted_frames(n_users=1500, seed=3)
    big = tmp_path / "big.duckdb"
    frame = make_interactions(
        inter["user_id"], inter["item_id"], timestamp=inter["timestamp"], rating=inter["rating"]
    )
    ingest(big, RawData(frame, items))
    out = tmp_path / "recs.parquet"
    some = tmp_path / "some.txt"
    some.write_text("u0\nu1\nu2\n")
    base = [*CLI, "generate", "--model", str(reg), "--db", str(big), "--out", str(out)]
    done = subprocess.run([*base, "--users", str(some)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    previous = hashlib.sha256(out.read_bytes()).hexdigest()
    assert pq.read_table(out).num_rows == 30

    job = subprocess.Popen(
        [*base, "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 40
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert job.poll() is None, job.stdout.read().decode()
        time.sleep(0.02)
    time.sleep(0.5)  # writing batches into the temporary file
    assert job.poll() is None, "generation ended before it could be killed"
    kill_9(job)
    job.stdout.close()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == previous  # the old file, untouched
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("big.duckdb", "some.txt"))
    temps = [n for n in left if n != "recs.parquet"]
    assert "recs.parquet" in left and all(n.startswith(".recs.parquet.") for n in temps), left
    assert pq.read_table(out).num_rows == 30
    out.unlink()
    with pytest.raises(FileNotFoundError):  # nor does the temporary file read as the output
        pq.read_table(out)


def test_publish_onto_a_full_disk_fails_clearly_and_changes_nothing(world, tmp_path):
    """The disk fills at every point of a publish in turn (one more free page each time:
    copying each file, the manifest, CURRENT): each failure leaves the registry exactly as
    it was, until there is room and it publishes."""
    _, reg = world
    model = reg.parent / "model-0"
    page = os.sysconf("SC_PAGE_SIZE")
    used = sum(-(-f.stat().st_size // page) for f in reg.rglob("*") if f.is_file())
    failures = []
    for free in range(200):
        with small_disk(tmp_path / "disk", (used + free) * page) as disk:
            small = disk / "registry"
            shutil.copytree(reg, small)
            before = registry_state(small)
            listing = sorted(p.name for p in small.iterdir())  # other tests may leave .jobs
            try:
                name = registry.publish(model, small)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                failures.append(free)
                assert registry_state(small) == before, free
                assert sorted(p.name for p in small.iterdir()) == listing  # no leftovers
                continue
            assert registry_state(small)[:2] == ([*before[0], name], name)
            break
    assert len(failures) == free >= 5  # one page per small file, the weights' many

    with small_disk(tmp_path / "disk", (used + 2) * page) as disk:
        small = disk / "registry"
        shutil.copytree(reg, small)
        before = registry_state(small)
        res = cli("publish", "--model", str(model), "--registry", str(small))
        assert_disk_full_error(res)
        assert registry_state(small) == before
