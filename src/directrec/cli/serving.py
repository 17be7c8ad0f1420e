"""Commands that deploy and serve: publish, serve, token, update."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from directrec.cli.common import StoreOpt, _run_guarded, app, err, fail, out, saved_config


def _update_recipe(recipe: str | None, sets: list[str] | None, model_dir: Path):
    """The recipe an update runs under: --recipe (or the served model's stored recipe, or
    its model's plain defaults) with --set over it."""
    from directrec import recipes as rcp

    def run() -> rcp.Recipe:
        path, config = saved_config(model_dir)
        meta = config.get("meta", {})
        if recipe is not None:
            base = rcp.resolve(recipe)
        elif "recipe" in meta:
            base = rcp.stored(meta, str(path))
        else:
            base = rcp.Recipe.plain(str(config.get("model")))
        return base.with_overrides(sets)

    return _run_guarded(run)


# --------------------------------------------------------------------------- registry
@app.command()
def publish(
    model_dir: Annotated[Path, typer.Option("--model", help="a directory written by `train`")],
    registry_dir: Annotated[Path, typer.Option("--registry", help="registry directory")],
    current: Annotated[bool, typer.Option(help="make it the version to serve")] = True,
    db: Annotated[
        str | None,
        typer.Option(
            help="the store: its forgotten users are checked (default: the model's own store), "
            "and the canary builds lists for its users and records their NDCG@10 (without "
            "it: synthetic histories from the model's own items)"
        ),
    ] = None,
    canary_users: Annotated[
        int, typer.Option(min=1, help="stored users whose lists the canary builds")
    ] = 100,
) -> None:
    """Copy a trained model into a registry as its next version (with a sha256 manifest).
    Users forgotten in the store since the model was trained are checked: a model with
    per-user factors naming one is refused (train it again); others drop those ids. Then
    the canary: the model must load strictly and build full, valid, unseen lists with
    finite scores (serve/canary.py). A refused model exits 2, the registry unchanged."""
    from directrec.serve.canary import CanaryConfig, Refused
    from directrec.serve.registry import publish as do_publish

    def run() -> str:
        forgotten = _forgotten_for(model_dir, db)
        try:
            return do_publish(
                model_dir,
                registry_dir,
                current,
                db,
                CanaryConfig(users=canary_users),
                forgotten=forgotten,
            )
        except Refused as e:  # reported like any bad input: the message, exit 2
            raise ValueError(f"{model_dir}: refused by the canary ({e.reason}): {e}") from e

    version = _run_guarded(run)
    out.print(f"published {model_dir} as {registry_dir}/{version}", highlight=False)


def _forgotten_for(model_dir: Path, db: str | None) -> set[str]:
    """The forgotten-user hashes of `db`, else of the store the model records; a model
    with per-user factors is not published unchecked."""
    from directrec.data.store import is_url, open_store
    from directrec.serve.forgotten import personalises_per_user

    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return set()  # not a model directory: publish says so
    if not isinstance(config, dict):
        return set()  # publish names what is wrong with the file
    source = db or config.get("meta", {}).get("db")
    if source and "***" not in str(source) and (is_url(source) or Path(source).exists()):
        with open_store(source) as store:
            return store.forgotten()
    if personalises_per_user(str(config.get("model"))):
        raise ValueError(
            f"{model_dir}: cannot check this per-user model against forgotten users: its "
            f"store ({source or 'not recorded'}) cannot be opened; give --db"
        )
    return set()


@app.command()
def serve(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a registry (hot swaps) or a model directory")
    ],
    db: StoreOpt,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log (SQLite); default: beside the store")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_ADMIN_TOKEN",
            help="bearer token for /v1/admin (default: random, printed)",
        ),
    ] = None,
    feedback_token: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_FEEDBACK_TOKEN",
            help="shared bearer token that may post /v1/feedback for any user (a trusted backend)",
        ),
    ] = None,
    token_key: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_TOKEN_KEY",
            help="key that signs per-user feedback tokens (`directrec token`): a token "
            "may post events for its own user only",
        ),
    ] = None,
    token_key_file: Annotated[
        Path | None, typer.Option(help="read the token key from this file's first line")
    ] = None,
    open_feedback: Annotated[
        bool,
        typer.Option(
            "--open-feedback",
            help="allow /v1/feedback without any token on a non-loopback --host (anyone "
            "who reaches it can rewrite any user's history)",
        ),
    ] = False,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="seconds a connection has to send a request's headers, then 408"
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds a request has to send its whole body, then 408; no request holds "
            "a --max-inflight slot before its body is in",
        ),
    ] = 10.0,
    max_inflight: Annotated[
        int, typer.Option(min=1, help="requests in flight before shedding with 503")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="also shed when the requests in flight would take the model longer than "
            "this to serve, at its recent pace (0: only --max-inflight)",
        ),
    ] = 0.0,
    model_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="the model thread's OS priority below the event loop's (Linux nice "
            "steps; 0: equal): higher answers sheds sooner under overload, at some cost to "
            "normal-load latency",
        ),
    ] = 10,
    model_idle: Annotated[
        bool,
        typer.Option(
            help="run the model thread under SCHED_IDLE (Linux) instead of --model-nice: it "
            "gets the core only while the event loop waits, so sheds answer soonest",
        ),
    ] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="requests per model call")] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="how long a request waits for others to batch with")
    ] = 2.0,
    watch_seconds: Annotated[
        float, typer.Option(min=0, help="poll the registry for a new CURRENT (0: off)")
    ] = 2.0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: torch's default)")] = 0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="server processes sharing the port, the registry and (with PostgreSQL) the "
            "store and feedback log",
        ),
    ] = 1,
    list_cache: Annotated[
        int, typer.Option(min=0, help="finished lists kept per process (0: no list cache)")
    ] = 100_000,
    canary_users: Annotated[
        int,
        typer.Option(
            min=1,
            help="stored users whose lists a version must build before it is swapped in "
            "(fewer for slow models: the LM generates each list)",
        ),
    ] = 100,
    keep_alive: Annotated[
        float,
        typer.Option(
            min=1,
            help="seconds an idle keep-alive connection stays open (longer than clients' "
            "pools keep them, so a reused connection is not closed under a request)",
        ),
    ] = 75.0,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn); the web page is at `/`.

    Feedback modes: open (no credential; refused on a non-loopback --host without
    --open-feedback), --feedback-token (one shared secret, any user), --token-key
    (per-user tokens from `directrec token`); both token kinds may be set together."""
    import logging

    import uvicorn

    from directrec.serve.app import ServeConfig, create_app
    from directrec.serve.protocol import protocol_with
    from directrec.serve.tokens import check_exposure, read_key

    for name, value in (("--admin-token", admin_token), ("--feedback-token", feedback_token)):
        if value is not None and not value.strip():
            fail(f"{name} must not be empty (leave it out for the default)")
    key = _run_guarded(read_key, token_key, token_key_file)
    _run_guarded(check_exposure, host, feedback_token, key, open_feedback)
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = ServeConfig(
        model=model_dir,
        db=db,
        feedback=feedback,
        admin_token=admin_token,
        feedback_token=feedback_token,
        token_key=key.decode() if key is not None else None,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_inflight=max_inflight,
        max_wait_ms=max_wait_ms,
        model_nice=model_nice,
        model_idle=model_idle,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        watch_seconds=watch_seconds,
        list_cache=list_cache,
        canary_users=canary_users,
    )
    if workers > 1:
        # Every worker builds its own service from the same settings (one admin token for
        # all); uvicorn's supervisor restarts a worker that dies.
        import os
        import secrets

        from directrec.serve.app import CONFIG_ENV, config_to_env

        if cfg.admin_token is None:
            cfg.admin_token = secrets.token_urlsafe(24)
            err.print(
                f"admin token (set DIRECTREC_ADMIN_TOKEN to choose one): {cfg.admin_token}",
                highlight=False,
                markup=False,
            )
        os.environ[CONFIG_ENV] = config_to_env(cfg, threads)
        uvicorn.run(
            "directrec.serve.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=keep_alive,
            http=protocol_with(header_timeout),
        )
        return
    application = _run_guarded(create_app, cfg)
    if admin_token is None:
        err.print(
            f"admin token (set DIRECTREC_ADMIN_TOKEN to choose one): "
            f"{application.state.service.admin_token}",
            highlight=False,
            markup=False,
        )
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=keep_alive,
        http=protocol_with(header_timeout),
    )


@app.command()
def token(
    user: Annotated[str, typer.Option(help="the user id the token may post feedback for")],
    expires_in: Annotated[
        float | None,
        typer.Option(min=1, help="seconds the token stays valid (default: until the key changes)"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="DIRECTREC_TOKEN_KEY", help="the key `serve --token-key` checks with"),
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="read the key from this file's first line")
    ] = None,
) -> None:
    """Print a token that lets its holder (a browser, an app) post feedback for one user
    only, to a service started with the same --token-key."""
    from directrec.serve.tokens import issue, read_key

    secret = _run_guarded(read_key, key, key_file)
    if secret is None:
        fail("give the key: --key, DIRECTREC_TOKEN_KEY or --key-file")
    out.print(_run_guarded(issue, secret, user, expires_in), highlight=False, markup=False)


@app.command()
def update(
    model_dir: Annotated[
        Path, typer.Option("--model", help="the registry (or model) to start from")
    ],
    db: StoreOpt,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="registry to publish to (default: --model)")
    ] = None,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log; default: beside the store")
    ] = None,
    epochs: Annotated[int, typer.Option(min=0, help="more epochs (warm-starting models)")] = 3,
    tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="publish only if validation NDCG@10 is at most this share below the served version's",
        ),
    ] = 0.02,
    min_gate_users: Annotated[
        int, typer.Option(min=0, help="users with unseen interactions needed to compare")
    ] = 20,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="a recipe (shipped name or .toml file) for the update's training settings; "
            "default: the served model's own"
        ),
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="setting overrides key=value")
    ] = None,
) -> None:
    """Update the current model on the store plus feedback received since; publish it as
    the registry's next version (a running service swaps to it) if it validates no worse
    than the served version (within --tolerance), else keep it unpublished and say why.
    With --recipe (and --set), the update trains with that recipe's training settings (any
    setting for models that refit); the served model's network and fitted stages stay."""
    from directrec.serve.feedback import feedback_source
    from directrec.serve.registry import is_registry
    from directrec.serve.update import update_model

    target = out_dir or model_dir
    if out_dir is None and not is_registry(model_dir):
        fail(f"{model_dir} is a model directory, not a registry: give --out REGISTRY")
    chosen = None
    if recipe is not None or sets:
        chosen = _update_recipe(recipe, sets, model_dir)
    version, facts = _run_guarded(
        update_model,
        model_dir,
        db,
        feedback_source(db, feedback),
        target,
        epochs,
        tolerance,
        min_gate_users,
        recipe=chosen,
    )
    shown = ", ".join(f"{k}={v}" for k, v in facts.items() if k not in ("reason", "kept_at"))
    if version is None:
        err.print(
            f"not published: {facts['reason']}; the update is kept at {facts['kept_at']} ({shown})",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    out.print(f"published {target}/{version}: {shown}", highlight=False, markup=False)
