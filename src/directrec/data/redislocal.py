"""A throwaway Redis server of one's own on a free loopback port (Debian's `redis-server`),
for the stream tests and benchmark, or to try `directrec stream` without an administrator.
Nothing is persisted: the server keeps the streams in memory and is gone on exit."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from directrec.data.pglocal import free_port


def installed() -> bool:
    return shutil.which("redis-server") is not None


class LocalRedis:
    """`with LocalRedis() as r: r.url` starts it; stopped and its directory deleted on exit."""

    def __init__(self) -> None:
        if not installed():
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="directrec-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        import redis

        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(
            ["redis-server", *where, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
