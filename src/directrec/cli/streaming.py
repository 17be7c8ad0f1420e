"""`directrec stream`: interactions from a Redis Stream into the store, and optionally the
model updated as they arrive (through `update`'s gate)."""

from __future__ import annotations

import fcntl
import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from directrec.cli.common import StoreOpt, _run_guarded, app, err, fail, out

if TYPE_CHECKING:
    from directrec.data.stream import Consumer


class UpdateSchedule:
    """Runs `update_model` between batches: after `every` newly stored events, or once
    `interval` seconds have passed with new events; one at a time across processes (the
    registry's job lock, which the service's update jobs take too). A rejected update
    leaves CURRENT as it was; the consumer goes on either way."""

    def __init__(
        self,
        registry: Path,
        db: str,
        feedback: Path | None,
        every: int | None,
        interval: float | None,
        options: dict,
    ) -> None:
        self.registry, self.db, self.feedback = registry, db, feedback
        self.every, self.interval, self.options = every, interval, options
        self.seen = 0  # stored events counted at the last update
        self.last = time.monotonic()
        self.outcomes: list[dict] = []

    def due(self, stored: int) -> bool:
        new = stored - self.seen
        if new <= 0:
            return False
        if self.every is not None and new >= self.every:
            return True
        return self.interval is not None and time.monotonic() - self.last >= self.interval

    def __call__(self, consumer: Consumer) -> None:
        stored = consumer.totals.stored
        if not self.due(stored):
            return
        from directrec.serve.feedback import feedback_source
        from directrec.serve.update import update_model

        lock_dir = self.registry / ".jobs"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / "lock", "a+") as held:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another process is updating this registry: try again later
            consumer.pause_writes()  # a DuckDB file is read by the update, so let go of it
            self.seen, self.last = stored, time.monotonic()
            try:
                version, facts = update_model(
                    self.registry,
                    self.db,
                    feedback_source(self.db, self.feedback),
                    self.registry,
                    **self.options,
                )
            except Exception as e:  # the stream goes on; the next trigger tries again
                version, facts = None, {"error": f"{type(e).__name__}: {e}"}
        outcome = {"update": version, "after_events": stored, **facts}
        self.outcomes.append(outcome)
        out.print(json.dumps(outcome, default=str), highlight=False, markup=False, soft_wrap=True)


@app.command()
def stream(
    db: StoreOpt,
    source: Annotated[str, typer.Option(help="Redis URL, e.g. redis://127.0.0.1:6379/0")],
    stream_name: Annotated[str, typer.Option("--stream", help="the stream's key")] = "events",
    group: Annotated[str, typer.Option(help="consumer group (created if missing)")] = "directrec",
    consumer: Annotated[
        str | None, typer.Option(help="this consumer's name in the group (default: host-pid)")
    ] = None,
    dead_letter: Annotated[
        str | None, typer.Option(help="stream for invalid entries (default: STREAM:dead)")
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, help="entries read and written in one transaction")
    ] = 500,
    claim_after: Annotated[
        float,
        typer.Option(
            min=0.01, help="seconds an entry may stay pending on another consumer before taken"
        ),
    ] = 30.0,
    strict: Annotated[
        bool, typer.Option(help="an item missing from the catalogue is a dead letter")
    ] = False,
    time_unit: Annotated[
        str | None,
        typer.Option(help="unit of numeric times: s | ms | us | ns (default: from their size)"),
    ] = None,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="stop after handling this many entries")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(min=0, help="stop once no entry came for this many seconds")
    ] = None,
    update_model: Annotated[
        Path | None,
        typer.Option("--update", help="registry to update as events arrive (through the gate)"),
    ] = None,
    update_every: Annotated[
        int | None, typer.Option(min=1, help="update after this many newly stored events")
    ] = None,
    update_interval: Annotated[
        float | None,
        typer.Option(min=1, help="update every this many seconds when events arrived"),
    ] = None,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log the update reads; default: beside the store")
    ] = None,
    epochs: Annotated[int, typer.Option(min=0, help="update epochs (warm-starting models)")] = 3,
    tolerance: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="the update gate's tolerance (see `update`)")
    ] = 0.02,
    min_gate_users: Annotated[
        int, typer.Option(min=0, help="users with unseen interactions needed to compare")
    ] = 20,
) -> None:
    """Consume interaction events from a Redis Stream into the store, as `ingest --append`
    would, with a consumer group: each batch is validated (a bad entry goes to the
    dead-letter stream with its reason), written in one transaction with its events'
    idempotency keys, then acknowledged. Several consumers share a group's load; entries a
    dead consumer left pending are claimed after --claim-after seconds and applied once.

    With --update REGISTRY and --update-every N (or --update-interval S), the served model
    is updated as events arrive, published only if it passes `update`'s gate.

    A DuckDB store is held open for writing, so no service can read it meanwhile; stream
    into a PostgreSQL store to serve while consuming (docs/serving.md)."""
    from directrec.data.stream import Consumer, StreamConfig

    if update_model is not None and update_every is None and update_interval is None:
        fail("--update needs --update-every N or --update-interval SECONDS")
    if update_model is None and (update_every is not None or update_interval is not None):
        fail("--update-every/--update-interval need --update REGISTRY")
    cfg = _run_guarded(
        StreamConfig,
        source,
        stream_name,
        group,
        consumer or "",
        dead_letter or "",
        batch,
        claim_idle_ms=int(claim_after * 1000),
        strict=strict,
        time_unit=time_unit,
    )
    schedule = None
    if update_model is not None:
        schedule = UpdateSchedule(
            update_model,
            db,
            feedback,
            update_every,
            update_interval,
            {"epochs": epochs, "tolerance": tolerance, "min_gate_users": min_gate_users},
        )
    worker = _run_guarded(Consumer, cfg, db, between=schedule)

    def stop(*_: object) -> None:
        worker.stop.set()  # the current batch finishes, is acknowledged, then we exit

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        totals = _run_guarded(worker.run, max_events, idle_exit)
    finally:
        _run_guarded(worker.close)
    err.print(
        f"{cfg.consumer}: stored {totals.stored}, duplicates {totals.duplicates}, dead letters "
        f"{totals.dead} (to {cfg.dead_letter}), claimed {totals.claimed}",
        highlight=False,
        markup=False,
    )
    out.print(
        json.dumps({"consumer": cfg.consumer, **totals.as_dict(), "dead_reasons": totals.reasons}),
        highlight=False,
        markup=False,
    )
