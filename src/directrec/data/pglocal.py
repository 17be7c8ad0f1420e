"""A throwaway PostgreSQL server of one's own: `initdb` into a directory and `pg_ctl` on
a free loopback port. The tests and benchmarks use it; so can a user who wants to try the
PostgreSQL store without an administrator (Debian's `postgresql` package suffices).

PostgreSQL refuses to run as root; as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """Start with `with LocalPostgres() as pg: pg.url`; stopped and deleted on exit.

    `fsync=False` is for tests only (faster, not crash-safe)."""

    def __init__(self, root: str | Path | None = None, fsync: bool = True) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bin = bin_dir
        self.own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="directrec-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.fsync = fsync
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://directrec@127.0.0.1:{self.port}/directrec"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {proc.stderr.strip()[-2000:]}")

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "directrec"]
        self._run(*initdb, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.root}" + ("" if self.fsync else " -F")
        pg_ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log")]
        self._run(*pg_ctl, "-w", "-t", "60", "-o", opts, "start")
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "directrec"]
        self._run(str(self.bin / "createdb"), *where, "directrec")
        return self

    def stop(self) -> None:
        if self.data.exists():
            pg_ctl = [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data)]
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
