"""What every command shares: the typer app, the consoles, `--set` parsing and the
error guard (expected errors: one line and exit 2; a full disk: one line and exit 1)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class Group(TyperGroup):
    """The app's group: its command list shows each command's first paragraph joined."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and cmd.short_help is None and cmd.help:
            first = inspect.cleandoc(cmd.help).split("\n\n")[0]
            cmd.short_help = " ".join(first.split())
        return cmd


app = typer.Typer(
    cls=Group,
    help="directrec: generative recommendation, with honest baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    # escaped: messages name recipe tables ("[network]") that rich would take for markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def with_budget(pairs: list[str] | None, max_minutes: float | None, models: list[str]) -> list[str]:
    """`--max-minutes N` as the `--set max_minutes=N` it stands for (for those of `models`
    trained by epochs), before the other `--set` pairs, so an explicit one still wins."""
    from directrec.recipes import setting_defaults

    if max_minutes is None:
        return list(pairs or [])
    if max_minutes < 0:
        fail(f"--max-minutes must be >= 0 (0 = no budget), not {max_minutes:g}")
    if not any("max_minutes" in setting_defaults(m) for m in models):
        fail(f"--max-minutes: none of {', '.join(models)} trains by epochs, so none takes a budget")
    return [f"max_minutes={max_minutes!r}", *(pairs or [])]


def parse_settings(pairs: list[str] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """`--set key=value` (all models that have the field) or `--set model.key=value`,
    converted to the type of the model's setting; an unknown model or key is refused with
    the closest valid names."""
    from directrec.models import MODELS
    from directrec.recipes import (
        RecipeError,
        closest,
        convert_setting,
        setting_defaults,
        split_pair,
    )

    result: dict[str, dict[str, Any]] = {m: {} for m in models}
    for pair in pairs or []:
        try:
            target, fld, raw = split_pair(pair)
            if target and target not in MODELS:
                fail(f"--set {pair!r}: unknown model {target!r}{closest(target, MODELS)}")
            names = [target] if target else models
            having = [m for m in names if fld in setting_defaults(m)]
            if not having:
                valid = {f for m in names for f in setting_defaults(m)}
                fail(
                    f"--set {pair!r}: no selected model has a setting {fld!r}{closest(fld, valid)}"
                )
            for m in having:
                result.setdefault(m, {})[fld] = convert_setting(m, fld, raw, f"--set {pair!r}")
        except RecipeError as e:
            fail(str(e))
    return result


_DEBUG = {"on": False}


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of an unexpected error")
    ] = False,
) -> None:
    """directrec: generative recommendation, with honest baselines."""
    _DEBUG["on"] = debug


def _run_guarded(fn, *args, **kwargs):
    """Expected user errors: a clean message and exit code 2. Anything else: one line and
    exit code 1 (the traceback with --debug), never a bare traceback."""
    from directrec.data.schema import DataError

    try:
        return fn(*args, **kwargs)
    except (DataError, ValueError, FileNotFoundError) as e:  # DataError names file:line:field
        fail(str(e))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:
        full = _disk_full(e)
        if full is not None:  # an environment fault, not a bug: no traceback hint
            fail(f"disk full: {full}; free some space and rerun", 1)
        if _DEBUG["on"]:
            raise
        fail(f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)


def _disk_full(e: BaseException) -> str | None:
    """The one-line reason when `e` (or what caused it) is a full disk or quota: an
    OSError with ENOSPC/EDQUOT, or a DuckDB error whose write failed for lack of space."""
    import errno

    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on device ({e.filename or 'writing'})"
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return " ".join(text.split())  # DuckDB's message names the file
        e = e.__cause__ or e.__context__
    return None


# A store: a DuckDB file (the embedded default) or a PostgreSQL URL.
StoreOpt = Annotated[
    str, typer.Option(help="store: a DuckDB file or postgresql://user@host:port/db")
]
BudgetOpt = Annotated[  # `with_budget` turns it into the setting
    float | None,
    typer.Option(
        "--max-minutes",
        help="a wall-clock training budget in minutes for the models trained by epochs "
        "(default: none, they train to early stopping); the batches stop at it, mid-epoch if "
        "need be, and the model validates and is kept. What is learned then depends on how "
        "busy the machine is",
    ),
]


def saved_config(model_dir: Path) -> tuple[Path, dict]:
    """A model directory (or a registry's current version) and its config.json document
    (model name, settings, meta), without loading its weights."""
    import json

    from directrec.serve.registry import resolve as resolve_model

    path = Path(resolve_model(model_dir)[0])
    try:
        return path, json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a directrec model directory ({e})") from None
