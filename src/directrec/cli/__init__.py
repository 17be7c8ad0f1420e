"""The `directrec` command line (one module per group of commands): ingest, info, forget,
benchmark, train, evaluate, recipes, models, tune, recommend, generate, publish, serve,
token, update, stream.

Bad input exits non-zero with a message naming the file, line and field; nothing is
half-written (see data/store.py and models/base.py).
"""

# they register commands, in the order `directrec --help` lists them
from directrec.cli import data, experiments, discover, tune, lists, serving, streaming  # noqa: F401, I001
from directrec.cli.common import app, parse_settings

__all__ = ["app", "parse_settings"]
