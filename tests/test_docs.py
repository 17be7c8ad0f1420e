"""The docs a stranger reads: short enough, the benchmark page up to date with its results,
and every runnable example command runs as written.

Runnable examples are the lines of fenced ```console blocks that start with `$ `
(a trailing backslash continues a line). Each page's examples run in order, in a fresh
directory holding a tiny generated shop: `events.csv` (uid, sku, ts, stars) and
`catalogue.csv` (sku, name, description, tags), already ingested into `shop.duckdb`.
A console line that cannot run here must match one of SKIPS, which says why."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from directrec.cli import app
from tests.conftest import planted_frames

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    *sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md"
    ),
]

# (pattern, why it does not run here); every skipped line must match one of these.
SKIPS = [
    (r"directrec serve\b", "starts a long-running HTTP server (tests/serve cover the service)"),
    (r"^torchrun\b", "several processes (tests/models cover DDP training under torchrun)"),
    (r"postgresql://", "needs a PostgreSQL server at that address (tests/test_cli_postgres.py)"),
    (r"redis://|^redis-cli\b", "needs a Redis server (tests/data/test_stream.py starts one)"),
    (r"device=cuda", "needs a GPU"),
    (r"\b(ml1m|beauty)\.duckdb\b|ml-1m/", "real benchmark data (bench/prepare.sh ingests it)"),
]


def console_commands(text: str) -> list[str]:
    """The `$ ` lines of the ```console blocks of one page, continuations joined."""
    out: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("$ "):
                out.append(" ".join(line[2:].split()))
            elif line.strip():
                raise AssertionError(f"a console block line that is not a command: {line!r}")
    return out


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPS if re.search(pattern, command)), None)


def write_shop(d: Path) -> None:
    inter, items = planted_frames(n_users=120)
    events = inter.assign(uid=inter["user_id"].str[1:].astype(int) + 1)
    events = events.rename(columns={"item_id": "sku", "timestamp": "ts", "rating": "stars"})
    events[["uid", "sku", "ts", "stars"]].to_csv(d / "events.csv", index=False)
    catalogue = items.assign(
        description=items["title"] + " and more", tags=items["categories"].map("|".join)
    ).rename(columns={"item_id": "sku", "title": "name"})
    catalogue[["sku", "name", "description", "tags"]].to_csv(d / "catalogue.csv", index=False)


INGEST = (
    "ingest --format csv --interactions events.csv --columns user=uid,item=sku,time=ts,"
    "rating=stars --items catalogue.csv --item-columns id=sku,title=name,text=description,"
    "categories=tags --db shop.duckdb"
)


# What some pages' examples leave behind, checked beyond their exit codes.
EXPECT = {
    "README.md": ["results/results.json", "models/sas/weights.safetensors", "registry/CURRENT"],
    "docs/data.md": ["liked.duckdb"],
    "docs/evaluation.md": ["results-seeds/results.md", "rating/results.json", "results-ease"],
    "docs/serving.md": ["registry/CURRENT", "recs.parquet"],
    "docs/coldstart.md": ["models/ease-blend/stages.json"],
    "docs/llm.md": ["models/llm/config.json"],
}


def run(command: str):
    return CliRunner().invoke(app, shlex.split(command, comments=True))


@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_a_page_run(page, tmp_path, monkeypatch):
    commands = console_commands((ROOT / page).read_text())
    monkeypatch.chdir(tmp_path)
    write_shop(tmp_path)
    assert run(INGEST).exit_code == 0
    ran = 0
    for command in commands:
        if skip_reason(command):
            continue
        assert command.startswith("directrec "), f"{page}: {command!r} is neither run nor skipped"
        res = run(command.removeprefix("directrec "))
        assert res.exit_code == 0, f"{page}: `{command}` failed:\n{res.output}"
        ran += 1
    for path in EXPECT.get(page, []):
        assert (tmp_path / path).exists(), f"{page}: its examples wrote no {path}"
    # only pages that show no command here have nothing to run: api.md (Python, run by
    # tests/test_api.py), architecture.md (for contributors), the changelog
    assert ran > 0 or page in {"docs/api.md", "docs/architecture.md", "docs/CHANGELOG.md"}, page


def test_every_page_with_commands_is_covered():
    """The convention is used where the commands are: each guide page that shows
    `directrec` commands has runnable ones, and the skips stay a minority."""
    commands = {p: console_commands((ROOT / p).read_text()) for p in PAGES}
    run_here = [c for cs in commands.values() for c in cs if not skip_reason(c)]
    skipped = [c for cs in commands.values() for c in cs if skip_reason(c)]
    assert len(run_here) >= 30 and len(skipped) < len(run_here) / 2
    for p in ("README.md", "docs/data.md", "docs/models.md", "docs/evaluation.md"):
        assert any(not skip_reason(c) for c in commands[p]), p


def test_console_lines_parse_and_skips_say_why():
    assert console_commands("```console\n$ directrec a \\\n    --b c\n$ torchrun x\n```\n") == [
        "directrec a --b c",
        "torchrun x",
    ]
    with pytest.raises(AssertionError, match="not a command"):
        console_commands("```console\ndirectrec a\n```\n")
    assert skip_reason("directrec serve --model r/ --db s.duckdb") is not None
    assert skip_reason("directrec train ease --db shop.duckdb --out m") is None


def test_the_pages_are_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    assert len((ROOT / "docs" / "benchmarks.md").read_text().splitlines()) <= 300
    # the README's first lines are the two commands a newcomer needs
    head = (ROOT / "README.md").read_text().splitlines()[:5]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_benchmarks_page_is_generated_from_the_results():
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "make_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_links_between_pages_resolve():
    for page in [*PAGES, "docs/benchmarks.md"]:
        text = (ROOT / page).read_text()
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", text):
            assert (ROOT / page).parent.joinpath(target).exists(), f"{page} links to {target}"
