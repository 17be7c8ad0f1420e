"""`python -m directrec.cli …` runs the command line."""

from directrec.cli import app

app()
