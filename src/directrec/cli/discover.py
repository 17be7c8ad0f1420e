"""Finding one's way: `directrec models` (one line per model; `models MODEL` its settings),
the settings table `train MODEL --help` appends, and help that keeps examples whole.

`--help` is rendered by typer at the terminal's width (80 columns when piped); a command
line cut in the middle cannot be pasted, so examples are printed after the help without
wrapping or cropping, and the command list shows each command's first paragraph as one
line of prose instead of its docstring's hard line breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from directrec.cli.common import _run_guarded, app, fail, out

if TYPE_CHECKING:
    from directrec.recipes import Recipe


# --------------------------------------------------------------------------- help classes
def with_examples(*examples: str, settings_of_model: bool = False) -> type[TyperCommand]:
    """A command class whose `--help` ends with `examples`, each printed whole (never cut
    at the help's width); with `settings_of_model`, a model named on the command line
    (`train ease --help`) also gets its settings table."""

    class Documented(TyperCommand):
        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            # --help is eager: it prints before the arguments are parsed, so the model
            # named among them is found here
            if settings_of_model:
                ctx.meta["help_recipe"] = _named_recipe(args)
            return super().parse_args(ctx, args)

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            super().format_help(ctx, formatter)
            recipe = ctx.meta.get("help_recipe")
            if recipe is not None:
                out.print(settings_table(recipe))
            elif settings_of_model:
                out.print(
                    " `directrec train MODEL --help` or `directrec models MODEL` lists "
                    "MODEL's settings with their defaults and meaning; `directrec models` "
                    "lists the models.\n",
                    highlight=False,
                    markup=False,
                )
            if examples:
                out.print(Text(" Examples:", style="bold"))
                for line in examples:
                    # soft wrap: the line goes out whole, whatever the console's width
                    out.print(Text(f"   {line}"), soft_wrap=True, crop=False)
                out.print()

    return Documented


def _named_recipe(args: list[str]) -> Recipe | None:
    """The recipe a command line would train: its --recipe, else MODEL's default one."""
    from directrec.models import MODELS
    from directrec.recipes import default_for, resolve

    try:
        for i, a in enumerate(args):
            if a.startswith("--recipe="):
                return resolve(a.split("=", 1)[1])
            if a == "--recipe" and i + 1 < len(args):
                return resolve(args[i + 1])
        named = next((a for a in args if a in MODELS), None)
        return default_for(named) if named is not None else None
    except ValueError:  # a bad recipe is reported when the command runs, not in its help
        return None


# --------------------------------------------------------------------------- settings
def settings_rows(recipe: Recipe) -> list[tuple[str, str, str, str, str]]:
    """(part, setting, type, default, meaning) for every setting of the recipe's model, the
    default being what training by `recipe` uses: its settings over the model's own
    defaults; grouped by part (network, codes, training, decoding, model, run)."""
    from directrec.models import MODELS
    from directrec.models.settings import PARTS
    from directrec.recipes import setting_defaults

    meaning = MODELS[recipe.model].setting_help()
    parts = MODELS[recipe.model].setting_parts()
    rows = []
    for name, default in setting_defaults(recipe.model).items():
        value = recipe.settings.get(name, default)
        typ = type(value).__name__ if value is not None else "any"
        rows.append((parts[name], name, typ, _show(value), meaning.get(name, "")))
    return sorted(rows, key=lambda r: PARTS.index(r[0]))  # stable: config order within


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_table(recipe: Recipe) -> Table:
    """The settings of `recipe`'s model as a table (`settings_rows`)."""
    from directrec.models import MODELS

    model = recipe.model
    source = f"the recipe {recipe.name!r}" if recipe.source else "the model's own"
    table = Table(
        title=f"{model} settings (--set KEY=VALUE; defaults: {source})",
        title_justify="left",
        caption=MODELS[model].summary,
        caption_justify="left",
    )
    table.add_column("part", no_wrap=True)
    table.add_column("setting", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("default", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for row in settings_rows(recipe):
        table.add_row(*row)
    return table


# --------------------------------------------------------------------------- models
@app.command(
    cls=with_examples(
        "directrec models",
        "directrec models ease",
        "directrec train ease --db shop.duckdb --out models/ease --set l2=300",
    )
)
def models(
    model: Annotated[
        str | None,
        typer.Argument(metavar="[MODEL]", help="a model: list its settings instead"),
    ] = None,
) -> None:
    """The models, one line each (name, what it is, what it can do); with MODEL, its
    settings with their defaults and meaning."""
    from directrec.models import MODELS
    from directrec.recipes import closest

    if model is not None:
        if model not in MODELS:
            fail(f"unknown model {model!r}{closest(model, MODELS)}")
        from directrec.recipes import default_for

        out.print(settings_table(_run_guarded(default_for, model)))
        return
    width = max(map(len, MODELS))
    for name, cls in MODELS.items():
        can = ", ".join(_abilities(cls.capabilities))
        # one line per model, whatever the width: the terminal wraps it, rich does not
        line = f"{name:<{width}}  {cls.summary}" + (f"  [{can}]" if can else "")
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(
        "\n`directrec models MODEL` (or `directrec train MODEL --help`) lists MODEL's settings",
        highlight=False,
        markup=False,
    )


def _abilities(caps: Any) -> Sequence[str]:
    said = {
        "rating": "ratings",
        "early_stopping": "early stopping",
        "needs_text": "reads item text",
        "cold_items": "cold items",
        "warm_start": "warm update",
        "reads_requests": "text requests",
    }
    return [text for flag, text in said.items() if getattr(caps, flag)]
