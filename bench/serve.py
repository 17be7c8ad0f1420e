"""Service benchmarks on loopback: sustained rate, 10× overload, malformed input, kill -9
during feedback, model swaps under load. Each writes JSON (command, model, data, figures)
to --out.

    python bench/serve.py rate     --model REG --db DB --rate 300 --seconds 30
    python bench/serve.py overload --model REG --db DB --rate 3000 --seconds 60 --baseline-p99 0.05
    python bench/serve.py fuzz     --model REG --db DB --cases 1000
    python bench/serve.py kill9    --model REG --db DB --rounds 20
    python bench/serve.py swaps    --model REG --db DB --swaps 200
    python bench/serve.py wrk      --model REG --db DB --connections 1,2,4,8 --seconds 15

`--server-core 0 --client-core 1` pins the server (taskset) and the load generator (this
process, or wrk) to one core each, so neither steals the other's CPU.

Two load generators. `wrk` (Debian's, compiled; closed-loop: N connections each sending
its next request when the last one returned; a Lua script picks random users) measures
the highest throughput whose p99 stays under a bound. The others use an open-loop
generator in this process (requests leave on a fixed schedule whatever the server does;
latency counts from the scheduled time, so a slow server cannot hide its queueing),
which also separates the latency of admitted requests from that of 503s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: argparse.Namespace, *extra: str, feedback: Path | None = None) -> None:
        self.port = free_port()
        pin = ["taskset", "-c", str(args.server_core)] if args.server_core is not None else []
        cmd = [
            *pin,
            sys.executable,
            "-m",
            "directrec.cli",
            "serve",
            "--model",
            str(args.model),
            "--db",
            str(args.db),
            "--port",
            str(self.port),
            "--admin-token",
            TOKEN,
            "--threads",
            str(args.threads),
            "--watch-seconds",
            "0",
            "--list-cache",
            str(args.list_cache),
            "--max-inflight",
            str(args.max_inflight),
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--model-nice",
            str(args.model_nice),
            "--model-idle" if args.model_idle else "--no-model-idle",
            "--workers",
            str(args.workers),
            *extra,
        ]
        if feedback is not None:
            cmd += ["--feedback", str(feedback)]
        self.log = open(args.out / f"server-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}; see {self.log.name}")
            try:
                if http("GET", self.port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready in 300 s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def http(
    method: str,
    port: int,
    path: str,
    body: bytes = b"",
    headers: dict | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    import http.client

    con = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        con.request(method, path, body=body or None, headers=headers or {})
        r = con.getresponse()
        return r.status, r.read()
    finally:
        con.close()


# ----------------------------------------------------------------------------- load
class Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False  # has answered a request (so a failure may be a stale keep-alive)

    async def request(self, raw: bytes) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.used = False


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


async def open_loop(
    port: int, paths: list[str], rate: float, seconds: float, max_conns: int = 512
) -> dict:
    """Send GETs at `rate`/s for `seconds`; returns per-status latencies (from schedule)."""
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []
    results: list[tuple[int, float, float]] = []  # (status, latency, retry-after seen)
    errors = 0
    stale = [0]  # reused connections found closed (retried once)
    open_conns = 0
    n = int(rate * seconds)
    t0 = loop.time() + 0.2
    tasks = []

    async def one(i: int, at: float) -> None:
        nonlocal errors, open_conns
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle:
            c = idle.pop()
        elif open_conns < max_conns:
            c = Conn(port)
            open_conns += 1
        else:  # client-side cap reached: count as an error of the generator, not the server
            errors += 1
            return
        raw = get_request(paths[i % len(paths)])
        for attempt in (0, 1):
            try:
                status, headers = await c.request(raw)
                c.used = True
                results.append((status, loop.time() - at, float(headers.get("retry-after", 0))))
                idle.append(c)
                return
            except (OSError, asyncio.IncompleteReadError, ValueError):
                reused = c.used
                c.close()
                if attempt == 0 and reused:
                    # A kept-alive connection the server closed while idle: what every HTTP
                    # client does, retry once on a new connection (counted, not hidden).
                    stale[0] += 1
                    c = Conn(port)
                    continue
                errors += 1
                open_conns -= 1
                return

    for i in range(n):
        tasks.append(asyncio.ensure_future(one(i, t0 + i / rate)))
    await asyncio.gather(*tasks)
    for c in idle:
        c.close()
    wall = loop.time() - t0
    return summarise(results, errors, n, wall) | {"stale_keepalive_retries": stale[0]}


def summarise(results: list[tuple[int, float, float]], errors: int, sent: int, wall: float) -> dict:
    out: dict = {"sent": sent, "wall_seconds": round(wall, 2), "transport_errors": errors}
    codes: dict[str, int] = {}
    for s, _, _ in results:
        codes[str(s)] = codes.get(str(s), 0) + 1
    out["status_counts"] = codes
    for label, keep in (("ok", lambda s: s == 200), ("shed", lambda s: s in (429, 503))):
        lat = np.array([lt for s, lt, _ in results if keep(s)])
        if len(lat):
            out[label] = {
                "count": len(lat),
                "throughput_per_s": round(len(lat) / wall, 1),
                "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 2),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 2),
                "max_ms": round(float(lat.max()) * 1000, 2),
            }
    return out


def user_paths(args: argparse.Namespace, n: int = 2000) -> list[str]:
    from directrec.data.store import open_store

    with open_store(args.db) as s:
        users = s.user_ids()
    rng = random.Random(args.seed)
    if args.users:  # a fixed set of repeat users (the list cache's case)
        users = rng.sample(users, min(args.users, len(users)))
    return [f"/v1/users/{rng.choice(users)}/recommendations?k=10" for _ in range(n)]


# ----------------------------------------------------------------------------- scenarios
def rate(args: argparse.Namespace) -> dict:
    srv = Server(args)
    try:
        paths = user_paths(args)
        asyncio.run(open_loop(srv.port, paths, min(args.rate, 50), 3))  # warm-up
        res = asyncio.run(open_loop(srv.port, paths, args.rate, args.seconds))
        res["server_alive"] = srv.alive()
    finally:
        srv.stop()
    return res


def overload(args: argparse.Namespace) -> dict:
    srv = Server(args)
    try:
        paths = user_paths(args)
        asyncio.run(open_loop(srv.port, paths, 50, 3))
        res = asyncio.run(open_loop(srv.port, paths, args.rate, args.seconds))
        res["server_alive"] = srv.alive()
        res["after"] = asyncio.run(open_loop(srv.port, paths, 20, 3))  # still serving?
    finally:
        srv.stop()
    if args.baseline_p99 and "ok" in res:
        res["admitted_p99_over_baseline"] = round(
            res["ok"]["p99_ms"] / (args.baseline_p99 * 1000), 2
        )
    return res


def fuzz(args: argparse.Namespace) -> dict:
    """schemathesis over the OpenAPI spec, then a hand-written corpus of bad requests. The
    server runs on a copy of a DuckDB store: admin endpoints (forget) are fuzzed too."""
    from directrec.data.store import is_url

    if not is_url(args.db):
        copy = args.out / "fuzz-store.duckdb"
        shutil.copy(args.db, copy)
        args = argparse.Namespace(**{**vars(args), "db": str(copy)})
    srv = Server(args)
    pid = srv.proc.pid
    try:
        base = f"http://127.0.0.1:{srv.port}"
        cmd = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(args.cases),
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--report",
            "junit",
            "--report-dir",
            str(args.out / "schemathesis"),
            "--seed",
            str(args.seed),
            "--exclude-path",
            "/v1/admin/update",
        ]
        t = time.time()
        st = subprocess.run(cmd, capture_output=True, text=True)
        tail = st.stdout[-3000:]
        (args.out / "schemathesis.txt").write_text(st.stdout + st.stderr)
        corpus = hand_corpus()
        fivexx, statuses = 0, {}
        for method, path, body, headers in corpus:
            try:
                status, _ = http(method, srv.port, path, body, headers)
            except OSError as e:
                status = f"transport error: {e}"
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if isinstance(status, int) and status >= 500:
                fivexx += 1
        server_5xx = count_5xx(srv.port)
        return {
            "schemathesis_exit": st.returncode,
            "schemathesis_seconds": round(time.time() - t, 1),
            "schemathesis_tail": tail,
            "corpus_cases": len(corpus),
            "corpus_statuses": statuses,
            "corpus_5xx": fivexx,
            "server_5xx_total_from_metrics": server_5xx,
            "server_alive": srv.alive(),
            "same_pid": srv.proc.pid == pid,
        }
    finally:
        srv.stop()


def count_5xx(port: int) -> int:
    _, text = http("GET", port, "/metrics")
    total = 0
    for line in text.decode().splitlines():
        if line.startswith("directrec_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def hand_corpus() -> list[tuple[str, str, bytes, dict]]:
    j = {"Content-Type": "application/json"}
    rec, fb = "/v1/recommendations", "/v1/feedback"
    bodies = [
        b"",
        b"{",
        b'{"history": [',
        b"null",
        b"[]",
        b"123",
        b'"x"',
        b"{}",
        b'{"history": 5}',
        b'{"history": [1, 2]}',
        b'{"history": [null]}',
        b'{"history": ["1"], "k": 0}',
        b'{"history": ["1"], "k": -1}',
        b'{"history": ["1"], "k": 1000000000}',
        b'{"history": ["1"], "k": NaN}',
        b'{"history": ["1"], "k": 1e400}',
        b'{"history": ["1"], "diversity": Infinity}',
        b'{"history": ["\\ud800"]}',
        b'{"history": ["\\u0000"]}',
        '{"history": ["ﬁ𝔘𝔫𝔦𝔠𝔬𝔡𝔢👍🏽\u202e"]}'.encode(),
        json.dumps({"history": [str(i) for i in range(5000)]}).encode(),
        json.dumps({"history": ["1"] * 999}).encode(),
        b'{"history": ["1"], "exclude_categories": [' + b'"a",' * 200 + b'"b"]}',
        b"\xff\xfe\x00garbage",
        b"x" * (10 << 20),
    ]
    out = [("POST", rec, b, j) for b in bodies]
    events = [
        b'{"events": []}',
        b'{"events": [{}]}',
        b'{"events": [{"user_id": "1", "item_id": "1", "type": "like", "timestamp": NaN}]}',
        b'{"events": [{"user_id": "1", "item_id": "1", "type": "like", "timestamp": -5}]}',
        b'{"events": [{"user_id": "1", "item_id": "1", "type": "explode"}]}',
        b'{"events": [{"user_id": "", "item_id": "1", "type": "like"}]}',
        b'{"events": [{"user_id": "1", "item_id": "no-such-item", "type": "like"}]}',
        json.dumps({"events": [{"user_id": "1", "item_id": "1", "type": "view"}] * 1001}).encode(),
        b"x" * (10 << 20),
    ]
    out += [("POST", fb, b, j) for b in events]
    paths = [
        "/v1/users/%ED%A0%80/recommendations",
        "/v1/users/" + "a" * 5000 + "/recommendations",
        "/v1/users/1/recommendations?k=0",
        "/v1/users/1/recommendations?k=1000000000",
        "/v1/users/1/recommendations?k=NaN",
        "/v1/users/1/recommendations?diversity=nan",
        "/v1/users/1/recommendations?exclude_categories="
        + "&exclude_categories=".join(["x"] * 200),
        "/v1/users/%00/recommendations",
        "/v1/users/no-such-user/recommendations",
        "/v1/items/%F0%9F%92%A9",
        "/v1/items/no-such",
        "/v1/items?query=",
        "/v1/items?query=" + "q" * 600,
        "/v1/items?query=%ED%A0%80",
        "/v1/users/1?k=-3",
        "/v1/nothing",
        "/v1/admin/reload",
    ]
    out += [("GET", p, b"", {}) for p in paths]
    out += [
        ("POST", "/v1/admin/reload", b"{}", j),
        (
            "POST",
            "/v1/admin/reload",
            b'{"version": "../../etc"}',
            {**j, "Authorization": f"Bearer {TOKEN}"},
        ),
        (
            "POST",
            "/v1/admin/reload",
            b'{"version": "v99999"}',
            {**j, "Authorization": f"Bearer {TOKEN}"},
        ),
        ("PUT", rec, b"{}", j),
        ("DELETE", "/v1/feedback", b"", {}),
        ("POST", rec, b'{"history": ["1"]}', {"Content-Type": "text/plain"}),
    ]
    return out


def kill9(args: argparse.Namespace) -> dict:
    """Post feedback from several clients, kill -9 the server at a random moment, restart;
    every acknowledged event must be stored exactly once, the database intact."""
    from directrec.data.store import open_store

    with open_store(args.db) as s:
        items = s.items()["item_id"].astype(str).tolist()[:200]
    log = args.out / "kill9-feedback.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(log) + suffix).unlink(missing_ok=True)
    acked: set[str] = set()
    rng = random.Random(args.seed)
    rounds = []
    for rnd in range(args.rounds):
        got = kill_round(args, log, items, rng, rnd)
        acked.update(got)
        rounds.append(len(got))
    with sqlite3.connect(log) as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        keys = [r[0] for r in con.execute("SELECT key FROM events")]
    stored = set(keys)
    return {
        "rounds": args.rounds,
        "writers": args.writers,
        "acknowledged": len(acked),
        "acknowledged_per_round": rounds,
        "stored": len(keys),
        "acknowledged_missing": len(acked - stored),
        "stored_twice": len(keys) - len(stored),
        "integrity_check": integrity,
    }


def kill_round(
    args: argparse.Namespace, log: Path, items: list[str], rng: random.Random, rnd: int
) -> list[str]:
    """One server life: writers post until a random moment, then kill -9. Returns the
    idempotency keys the server acknowledged (HTTP 200)."""
    srv = Server(args, feedback=log)
    stop_at = time.time() + rng.uniform(0.5, 2.0)
    got: list[str] = []

    async def poster(w: int) -> None:
        c = Conn(srv.port)
        n = 0
        while True:
            keys = [f"r{rnd}-w{w}-{n}-{b}" for b in range(rng.randint(1, 5))]
            n += 1
            body = json.dumps(
                {
                    "events": [
                        {
                            "user_id": f"bench{w}",
                            "item_id": rng.choice(items),
                            "type": "click",
                            "idempotency_key": k,
                        }
                        for k in keys
                    ]
                }
            ).encode()
            raw = (
                f"POST /v1/feedback HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                status, _ = await c.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                return  # the server died mid-request: not acknowledged
            if status == 200:
                got.extend(keys)

    async def run() -> None:
        tasks = [asyncio.ensure_future(poster(w)) for w in range(args.writers)]
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        srv.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)

    asyncio.run(run())
    srv.proc.wait()
    srv.log.close()
    return got


def swaps(args: argparse.Namespace) -> dict:
    """Reload versions in a loop under steady load: good ones, truncated ones, wrong-hash
    ones. No request may fail; bad artefacts must be rejected."""
    from directrec.serve import registry

    reg = Path(args.model)
    good = registry.versions(reg)
    if not registry.is_registry(reg) or not good:
        raise SystemExit("--model must be a registry with at least one version")
    srv = Server(args)
    work = args.out / "swap-artefacts"
    shutil.rmtree(work, ignore_errors=True)
    bad_versions = []
    base = reg / registry.current(reg)
    for kind in ("truncated", "wrong-hash"):
        v = registry.publish(base, reg, make_current=False)
        f = reg / v / "weights.safetensors"
        if kind == "truncated":
            with open(f, "r+b") as fh:
                fh.truncate(f.stat().st_size // 2)
        else:
            m = json.loads((reg / v / "manifest.json").read_text())
            m["files"]["config.json"] = "0" * 64
            (reg / v / "manifest.json").write_text(json.dumps(m))
        bad_versions.append(v)
    try:
        paths = user_paths(args)
        outcomes = {"ok": 0, "rejected": 0, "unexpected": 0}
        served: set[str] = set()

        async def main() -> dict:
            load = asyncio.ensure_future(open_loop(srv.port, paths, args.rate, args.seconds))
            loop = asyncio.get_running_loop()
            for i in range(args.swaps):
                v = bad_versions[i % 2] if i % 3 == 2 else good[i % len(good)]
                body = json.dumps({"version": v}).encode()
                status, _ = await loop.run_in_executor(
                    None,
                    lambda b=body: http(
                        "POST",
                        srv.port,
                        "/v1/admin/reload",
                        b,
                        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                    ),
                )
                expect_ok = v in good
                if status == 200 and expect_ok:
                    outcomes["ok"] += 1
                    served.add(v)
                elif status == 409 and not expect_ok:
                    outcomes["rejected"] += 1
                else:
                    outcomes["unexpected"] += 1
            return await load

        res = asyncio.run(main())
        failed = (
            sum(v for k, v in res["status_counts"].items() if k != "200") + res["transport_errors"]
        )
        return {
            "swaps": args.swaps,
            "reload_outcomes": outcomes,
            "versions_served": sorted(served),
            "bad_versions": bad_versions,
            "load": res,
            "failed_requests": failed,
            "server_alive": srv.alive(),
        }
    finally:
        srv.stop()
        for v in bad_versions:
            shutil.rmtree(reg / v, ignore_errors=True)


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
math.randomseed(tonumber(os.getenv("WRK_SEED")))
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "p999_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


# Paced wrk: one connection per wrk thread, so a thread's request and response alternate
# and Lua can time each one (LuaJIT FFI clock); `delay()` paces each connection to
# rate / connections. Latency is per status, written per thread to a file.
WRK_PACED = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } timespec;
int clock_gettime(int clk_id, timespec *tp);
]]
local ts = ffi.new("timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local paths, out, sent_at, gap_ms = {}, nil, 0, 0
function init(args)
  for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
  math.randomseed(tonumber(os.getenv("WRK_SEED")) + tid)
  gap_ms = tonumber(os.getenv("WRK_GAP_MS"))
  out = io.open(os.getenv("WRK_OUT") .. "." .. tid, "w")
end
function delay()
  return gap_ms * (0.5 + math.random())
end
function request()
  sent_at = now_us()
  return wrk.format("GET", paths[math.random(#paths)])
end
function response(status, headers, body)
  -- stdio buffers the writes; exit() flushes them when wrk ends
  out:write(status, " ", math.floor(now_us() - sent_at), "\\n")
end
function done(summary, latency, requests)
end
"""


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """(CPU seconds the process's threads ran, seconds they sat runnable waiting for a CPU,
    seconds its main thread, the event loop, waited), from Linux's
    /proc/PID/task/*/schedstat: the waits show how much the server lost to whatever else
    ran on its core (other processes included) and to its own threads."""
    run = wait = loop = 0
    for f in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            r, w, _ = f.read_text().split()
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
        run, wait = run + int(r), wait + int(w)
        if f.parent.name == str(pid):
            loop = int(w)
    return run / 1e9, wait / 1e9, loop / 1e9


def paced_wrk(
    args: argparse.Namespace,
    port: int,
    rate: float,
    conns: int,
    seconds: float,
    tag: str,
    pid: int | None = None,
) -> dict:
    """`conns` connections (one wrk thread each) paced to about `rate` req/s in total;
    latency percentiles per status from each request's own timing; with the server's
    `pid`, also the CPU it used and the time it waited for one."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    script, paths_file = args.out / "wrk-paced.lua", args.out / "wrk-paths.txt"
    script.write_text(WRK_PACED)
    if not paths_file.exists():
        paths_file.write_text("\n".join(user_paths(args, n=20_000)) + "\n")
    samples = args.out / f".paced-{tag}"
    for old in args.out.glob(f".paced-{tag}.*"):
        old.unlink()
    pin = ["taskset", "-c", str(args.client_core)] if args.client_core is not None else []
    gap_ms = max(conns / rate * 1000.0, 0.0)
    env = {
        **os.environ,
        "WRK_PATHS": str(paths_file),
        "WRK_SEED": str(args.seed),
        "WRK_GAP_MS": str(gap_ms),
        "WRK_OUT": str(samples),
    }
    flags = [f"-t{conns}", f"-c{conns}", f"-d{round(seconds)}s", "--timeout", "10s"]
    cmd = [*pin, exe, *flags, "-s", str(script), f"http://127.0.0.1:{port}"]
    cpu0 = cpu_seconds(pid) if pid is not None else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-1000:]}")
    cpu1 = cpu_seconds(pid) if pid is not None else None
    by_status: dict[str, list[float]] = {}
    for f in args.out.glob(f".paced-{tag}.*"):
        for line in f.read_text().splitlines():
            st, us = line.split()
            by_status.setdefault(st, []).append(int(us) / 1000)
        f.unlink()
    total = sum(len(v) for v in by_status.values())
    res: dict = {
        "command": " ".join(cmd[len(pin) :]),
        "target_rate": rate,
        "connections": conns,
        "pacing": f"each connection waits U(0.5, 1.5) × {gap_ms:.1f} ms after a response",
        "responses_timed": total,
        "achieved_rate": round(total / seconds, 1),
        "status_counts": {k: len(v) for k, v in by_status.items()},
        "wrk_stdout_tail": proc.stdout[-600:],
    }
    if cpu0 is not None and cpu1 is not None:
        used, waited, loop = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        res["server_cpu"] = {
            "seconds": round(used, 2),
            "share_of_one_core": round(used / seconds, 3),
            "us_per_response": round(used / max(total, 1) * 1e6, 1),
            "seconds_runnable_but_waiting": round(waited, 2),
            "event_loop_seconds_runnable_but_waiting": round(loop, 2),
        }
    for label, keep in (("ok", "200"), ("shed", "503")):
        lat = np.array(by_status.get(keep, []))
        if len(lat):
            res[label] = {
                "count": len(lat),
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "max_ms": round(float(lat.max()), 3),
            }
    return res


def overload_wrk(args: argparse.Namespace) -> dict:
    """Baseline at --baseline-rate, then --rate (10×) for --seconds, with paced wrk; then
    the server must still answer normally."""
    srv = Server(args)
    try:
        pid = srv.proc.pid  # taskset execs the server: same pid
        paced_wrk(args, srv.port, args.baseline_rate, 16, 5, "warm")
        base = paced_wrk(args, srv.port, args.baseline_rate, 16, args.seconds, "baseline", pid)
        over = paced_wrk(
            args, srv.port, args.rate, args.connections_over, args.seconds, "over", pid
        )
        after = paced_wrk(args, srv.port, 20, 4, 3, "after")
        alive = srv.alive()
    finally:
        srv.stop()
    ratio = None
    if "ok" in over and "ok" in base:
        ratio = round(over["ok"]["p99_ms"] / base["ok"]["p99_ms"], 2)
    return {
        "load_generator": "wrk 4.1 (Debian) with a pacing Lua script (one connection per thread)",
        "pinning": {"server_core": args.server_core, "client_core": args.client_core},
        "baseline": base,
        "overload": over,
        "after": after,
        "admitted_p99_over_baseline": ratio,
        "server_alive": alive,
    }


def profile(args: argparse.Namespace) -> dict:
    """Where a request's time goes: py-spy samples the pinned server for --seconds while
    wrk (8 connections, random users) loads it; inclusive share per function."""
    spy = Path(sys.executable).with_name("py-spy")
    exe = shutil.which("wrk")
    if exe is None or not spy.exists():
        raise SystemExit("needs wrk (make bench-tools) and py-spy (pip install py-spy)")
    srv = Server(args)
    script, paths_file = args.out / "wrk.lua", args.out / "wrk-paths.txt"
    script.write_text(WRK_SCRIPT)
    paths_file.write_text("\n".join(user_paths(args, n=20_000)) + "\n")
    pin = ["taskset", "-c", str(args.client_core)] if args.client_core is not None else []
    env = {**os.environ, "WRK_PATHS": str(paths_file), "WRK_SEED": str(args.seed)}
    raw = args.out / "profile.raw.txt"
    secs = round(args.seconds)
    try:
        load = subprocess.Popen(
            [
                *pin,
                exe,
                "-t1",
                "-c8",
                f"-d{secs + 6}s",
                "-s",
                str(script),
                f"http://127.0.0.1:{srv.port}",
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(3)
        pid = srv.proc.pid  # taskset execs the server: same pid
        subprocess.run(
            [
                *pin,
                str(spy),
                "record",
                "-p",
                str(pid),
                "-d",
                str(secs),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            capture_output=True,
            check=True,
        )
        load.wait()
    finally:
        srv.stop()
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for f in {x.split(" (")[0] for x in stack.split(";")[1:]}:
            incl[f] = incl.get(f, 0) + int(n)
    raw.unlink()
    top = sorted(incl.items(), key=lambda kv: -kv[1])[:40]
    return {
        "how": "py-spy 200 Hz on the server for --seconds under wrk -c8; share of samples "
        "(all threads, idle excluded) whose stack contains the function",
        "samples": total,
        "inclusive_share": {f: round(n / total, 3) for f, n in top},
    }


ERROR_KEYS = ("non_2xx", "connect_errors", "read_errors", "write_errors", "timeouts")


def wrk(args: argparse.Namespace) -> dict:
    """wrk at each connection count; the highest throughput whose p99 ≤ --p99-ms (and with
    no errors) is the sustained rate."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    srv = Server(args)
    script, paths_file = args.out / "wrk.lua", args.out / "wrk-paths.txt"
    script.write_text(WRK_SCRIPT)
    paths = user_paths(args, n=20_000)
    paths_file.write_text("\n".join(paths) + "\n")
    pin = ["taskset", "-c", str(args.client_core)] if args.client_core is not None else []
    env = {**os.environ, "WRK_PATHS": str(paths_file), "WRK_SEED": str(args.seed)}
    url = f"http://127.0.0.1:{srv.port}"
    runs = []

    def one(conns: int, seconds: float) -> dict:
        flags = ["-t1", f"-c{conns}", f"-d{round(seconds)}s", "--timeout", "10s", "-s", str(script)]
        cmd = [*pin, exe, *flags, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("WRKJSON "))
        r = json.loads(line[len("WRKJSON ") :])
        secs = r["duration_us"] / 1e6
        return {
            "connections": conns,
            "command": " ".join(cmd[len(pin) :]),
            "requests": r["requests"],
            "req_per_s": round(r["requests"] / secs, 1),
            "p50_ms": r["p50_us"] / 1000,
            "p90_ms": r["p90_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000,
            "p999_ms": r["p999_us"] / 1000,
            "max_ms": r["max_us"] / 1000,
            "errors": {k: r[k] for k in ERROR_KEYS},
        }

    try:
        if args.users:  # fill the list cache with every repeat user's list first
            for path in sorted(set(paths)):
                http("GET", srv.port, path)
        else:
            one(2, 3)  # warm-up: torch, allocator, history cache of some users
        for conns in [int(c) for c in args.connections.split(",")]:
            runs.append(one(conns, args.seconds))
        _, metrics = http("GET", srv.port, "/metrics")
        lines = metrics.decode().splitlines()
        ratio = [x for x in lines if x.startswith("directrec_list_cache_hit_ratio ")]
        hit_ratio = float(ratio[0].split()[1]) if ratio else None
        alive = srv.alive()
    finally:
        srv.stop()
    ok = [r for r in runs if r["p99_ms"] <= args.p99_ms and not any(r["errors"].values())]
    best = max(ok, key=lambda r: r["req_per_s"]) if ok else None
    return {
        "load_generator": "wrk 4.1 (Debian), 1 thread, closed loop, random users (Lua)",
        "pinning": {"server_core": args.server_core, "client_core": args.client_core},
        "server_workers": args.workers,
        "list_cache": args.list_cache,
        "repeat_users": args.users or None,
        "p99_bound_ms": args.p99_ms,
        "runs": runs,
        "sustained_req_per_s": best["req_per_s"] if best else 0.0,
        "sustained_at": best,
        "list_cache_hit_ratio": hit_ratio,
        "server_alive": alive,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "scenario",
        choices=["rate", "overload", "fuzz", "kill9", "swaps", "wrk", "overload_wrk", "profile"],
    )
    p.add_argument("--model", type=Path, required=True, help="registry or model directory")
    p.add_argument("--db", required=True, help="DuckDB file or postgresql:// URL")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench-serve")
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--baseline-p99", type=float, default=0.0, help="seconds, from a `rate` run")
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--swaps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="server torch threads")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="suffix for the result file")
    p.add_argument("--server-core", type=int, default=None, help="pin the server (taskset)")
    p.add_argument("--client-core", type=int, default=None, help="pin the load generator")
    p.add_argument("--workers", type=int, default=1, help="server processes")
    p.add_argument("--list-cache", type=int, default=0, help="server list cache (0: off)")
    p.add_argument("--users", type=int, default=0, help="draw from this many repeat users")
    p.add_argument("--connections", default="1,2,4,8,16", help="wrk: connection counts")
    p.add_argument("--p99-ms", type=float, default=50.0, help="wrk: the p99 bound")
    p.add_argument("--baseline-rate", type=float, default=300, help="overload_wrk: normal load")
    p.add_argument("--connections-over", type=int, default=256, help="overload_wrk: connections")
    p.add_argument("--max-inflight", type=int, default=64, help="server admission bound")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="server wait bound (0: off)")
    p.add_argument("--model-nice", type=int, default=10, help="server model thread's nice")
    p.add_argument("--model-idle", action="store_true", help="server model thread: SCHED_IDLE")
    args = p.parse_args()
    if args.client_core is not None:
        os.sched_setaffinity(0, {args.client_core})
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    res = {
        "scenario": args.scenario,
        "command": " ".join(["python", *sys.argv]),
        "model": str(args.model),
        "db": str(args.db),
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "pinning": {"server_core": args.server_core, "client_core": args.client_core},
        "list_cache": args.list_cache,
        "workers": args.workers,
        "max_inflight": args.max_inflight,
        "max_wait_ms": args.max_wait_ms,
        "model_nice": args.model_nice,
        "model_idle": args.model_idle,
    }
    res |= globals()[args.scenario](args)
    res["bench_seconds"] = round(time.time() - t, 1)
    name = args.scenario.replace("_wrk", "") + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
