"""The `directrec` command line (one module per group of commands): ingest, info, benchmark, train, evaluate, recipes,
recommend, generate, publish, serve, token, update, forget.

Bad input exits non-zero with a message naming the file, line and field; nothing is
half-written (see data/store.py and models/base.py).
"""

from directrec.cli import data, experiments, lists, serving  # noqa: F401  (they register commands)
from directrec.cli.common import app, parse_settings

__all__ = ["app", "parse_settings"]
