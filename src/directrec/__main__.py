"""`python -m directrec …` (and `torchrun -m directrec …`) run the command line."""

from directrec.cli import app

app()
