"""The HTTP service's routes: generated lists, ad-hoc sessions, durable feedback, item
search, admin (reload, background update jobs), health, metrics and the web page at `/`.

Request flow: headers within a deadline (protocol.py) → admission control sheds beyond
`max_inflight` before any parsing, then reads the body whole within its own deadline before
the request takes a slot (pure ASGI, middleware.py) → validate (schemas.py: bounded sizes,
structured 4xx) → micro-batch concurrent recommendation requests into one model call on
the model thread (batcher.py, service.py) → respond with the model version in
`X-Model-Version`. Histories are the store's rows plus feedback received since, read on
demand, so a like shows up in the next list at once; `directrec update` folds the feedback
into the weights.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from directrec.data.schema import DataError
from directrec.serve import registry
from directrec.serve.batcher import Batcher, BatchFailed, Overloaded
from directrec.serve.caches import History
from directrec.serve.canary import CanaryConfig, Refused
from directrec.serve.feedback import Event
from directrec.serve.middleware import Admission, Gate
from directrec.serve.schemas import (
    ROUTING,
    AdHocIn,
    FeedbackIn,
    ForgetIn,
    QueryInt,
    ReloadIn,
    UpdateIn,
    error_id,
    error_response,
    known_query,
    path_text,
    public_reason,
)
from directrec.serve.service import Job, ServeConfig, Service
from directrec.serve.tokens import TokenError, check_key
from directrec.serve.tokens import verify as verify_token

log = logging.getLogger("directrec.serve")
PAGE = Path(__file__).with_name("page.html")
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#4C72B0"/>'
    b'<path d="M4 4h4a4 4 0 0 1 0 8H4z" fill="#fff"/></svg>'
)

__all__ = ["ServeConfig", "app_from_env", "create_app"]
CONFIG_ENV = "DIRECTREC_SERVE_CONFIG"


def config_to_env(cfg: ServeConfig, threads: int = 0) -> str:
    """The settings every worker process of `serve --workers N` starts from."""
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()}
    return json.dumps({"config": fields, "threads": threads})


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process: the app from CONFIG_ENV's settings."""
    spec = json.loads(os.environ[CONFIG_ENV])
    fields = spec["config"]
    for k in ("model", "feedback"):
        if fields.get(k) is not None:
            fields[k] = Path(fields[k])
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return create_app(ServeConfig(**fields))


def create_app(cfg: ServeConfig) -> FastAPI:
    for name in ("admin_token", "feedback_token"):
        if getattr(cfg, name) == "":  # else "" would mean a random admin token, open feedback
            raise ValueError(f"--{name.replace('_', '-')} must not be empty")
    token_key = check_key(cfg.token_key) if cfg.token_key is not None else None
    svc = Service(cfg)
    # The model thread runs Python between torch calls; with the default 5 ms GIL switch
    # interval, the event loop (which admits and sheds) could wait that long for the GIL.
    sys.setswitchinterval(cfg.gil_switch_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.batcher = Batcher(
            svc.run_batch,
            cfg.max_batch,
            cfg.batch_wait_ms / 1000,
            max_queue=cfg.max_inflight * 4,
            timeout=cfg.request_timeout,
            nice=cfg.model_nice,
            idle=cfg.model_idle,
        )
        svc.batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, svc.load)
        # Everything loaded so far (torch, transformers, the model) lives for the process:
        # out of the collector's sight, a full collection no longer pauses the event loop
        # for the time it takes to walk millions of long-lived objects.
        gc.collect()
        gc.freeze()
        watcher = threading.Thread(target=svc.watch, daemon=True, name="registry-watch")
        watcher.start()
        yield
        svc.watch_stop.set()
        await svc.batcher.stop()
        svc.histories.close()
        svc.feedback.close()

    app = FastAPI(
        title="directrec",
        version="1",
        lifespan=lifespan,
        description="Generated recommendation lists, feedback, items.",
        dependencies=[Depends(known_query)],
    )
    app.state.service = svc

    # -------------------------------------------------------------- errors
    # Starlette's class: routing's own 404 and 405 get the one error body too.
    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if type(exc) is StarletteHTTPException and exc.status_code in ROUTING:
            exc.detail = ROUTING[exc.status_code]  # not raised by a route: no route matched
        # A dict detail carries fields beside the message (an error id, the users refused).
        extra = dict(exc.detail) if isinstance(exc.detail, dict) else {"message": exc.detail}
        resp = error_response(exc.status_code, str(extra.pop("message")), **extra)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The location and pydantic's message only: `input` and `ctx` echo values and
        # parser exception text.
        errors = exc.errors()
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in errors
        ][:20]
        bad_json = any(e.get("type") == "json_invalid" for e in errors)
        message = "the request body is not valid JSON" if bad_json else "invalid request"
        return error_response(422, message, fields=fields)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        eid = error_id()
        log.exception("unhandled error on %s (error id %s)", request.url.path, eid)
        return error_response(500, "internal error", error_id=eid)

    # -------------------------------------------------------------- helpers
    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if not svc.admin_ok(authorization):
            raise HTTPException(
                401,
                "admin endpoints need Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def feedback_auth(authorization: Annotated[str | None, Header()] = None) -> str | None:
        """The one user this request may post events for; None: any user (open feedback,
        or the shared token of a trusted backend)."""
        if not cfg.feedback_token and token_key is None:
            return None
        given = authorization or ""
        if cfg.feedback_token and hmac.compare_digest(
            given.encode(), f"Bearer {cfg.feedback_token}".encode()
        ):
            return None
        reason = "feedback needs Authorization: Bearer <token>"
        if token_key is not None and given.startswith("Bearer "):
            try:
                return verify_token(token_key, given.removeprefix("Bearer "))
            except TokenError as e:
                reason = f"feedback token rejected: {e}"
        raise HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})

    def public(e: Exception, what: str) -> str:
        """A 4xx reason that shows no server path and no internal error text: an expected
        error's own words (paths cut), else `what` and an id to find it in the log."""
        text = public_reason(e)
        if text is not None:
            log.warning("%s: %s", what, e)
            return text
        eid = error_id()
        log.error("%s (error id %s)", what, eid, exc_info=e)
        return f"{what} (error id {eid})"

    def check_k(k: int) -> None:
        if k > cfg.max_k:
            raise HTTPException(422, f"k must be at most {cfg.max_k}")

    def check_diversity(diversity: float | None) -> None:
        loaded = svc.loaded
        if diversity and (loaded is None or loaded.info.vectors is None):
            raise HTTPException(
                422,
                "this catalogue has no item vectors of the model's kind: `diversity` is unavailable",
            )

    def unknown_items(ids: list[str]) -> list[str]:
        known = svc.catalogue.titles
        model_items = svc.loaded.items if svc.loaded is not None else None
        return [
            i for i in ids if i not in known and (model_items is None or model_items.index(i) < 0)
        ]

    async def generate(job: Job) -> dict:
        if not svc.ready or svc.batcher is None or not svc.batcher.alive:
            raise HTTPException(503, "model not ready", headers={"Retry-After": "1"})
        try:
            return await svc.batcher.submit(job)
        except Overloaded:
            svc.metrics.shed.inc()
            raise HTTPException(
                503, "overloaded; retry shortly", headers={"Retry-After": "1"}
            ) from None
        except TimeoutError:
            raise HTTPException(
                503, "timed out waiting for the model; retry shortly", headers={"Retry-After": "1"}
            ) from None
        except BatchFailed as e:
            eid = error_id()
            log.error("generation failed (error id %s): %s", eid, e)
            raise HTTPException(
                500, {"message": "generation failed for this batch", "error_id": eid}
            ) from None

    def listing_body(res: dict, user: str | None) -> bytes:
        items = [
            {"rank": n + 1, **svc.item_view(i), "score": s}
            for n, (i, s) in enumerate(zip(res["items"], res["scores"], strict=True))
        ]
        for it, why in zip(items, res.get("reasons", []), strict=False):
            it.update(why)
        body = {
            "user_id": user,
            "model_version": res["version"],
            "fallback": res["fallback"],
            "history_used": res["history_used"],
            "items": items,
        }
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def json_bytes(body: bytes, version: str, cache: str | None = None) -> Response:
        headers = {"X-Model-Version": version}
        if cache:
            headers["X-Cache"] = cache
        return Response(body, media_type="application/json", headers=headers)

    # -------------------------------------------------------------- endpoints
    page_html = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(user: Annotated[str | None, Query(max_length=256)] = None) -> HTMLResponse:
        # `/?user=ID` is the shareable link to a user's list: the page's script reads it.
        return HTMLResponse(page_html)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(
            FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if not svc.ready or svc.loaded is None:
            return error_response(503, "not ready")
        if svc.batcher is None or not svc.batcher.alive:
            return error_response(503, "not ready: the batching loop has stopped")
        return JSONResponse(
            {"status": "ready", "model_version": svc.loaded.version, "worker": os.getpid()}
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(
            generate_latest(svc.metrics.registry), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/users")
    def users(
        k: Annotated[QueryInt, Query(ge=1, le=1000, description="users listed")] = 50,
    ) -> dict:
        return {"users": svc.histories.users(k)}

    @app.get("/v1/users/{user_id}")
    def user(
        user_id: Annotated[str, PathParam(max_length=256)],
        k: Annotated[QueryInt, Query(ge=1, le=1000, description="newest history items")] = 20,
    ) -> dict:
        got = svc.histories.get(path_text(user_id))
        if got is None:
            raise HTTPException(404, f"unknown user {user_id!r}")
        seq, dislikes = got.items, got.dislikes
        return {
            "user_id": user_id,
            "interactions": len(seq),
            "history": [svc.item_view(i) for i in reversed(seq[-k:])],
            "dislikes": sorted(dislikes)[:k],
        }

    @app.get("/v1/users/{user_id}/recommendations")
    async def user_recommendations(
        user_id: Annotated[str, PathParam(max_length=256)],
        k: Annotated[QueryInt, Query(ge=1)] = 10,
        exclude_seen: bool = True,
        diversity: Annotated[float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = None,
        exclude_categories: Annotated[list[str] | None, Query(max_length=100)] = None,
        explain: bool = False,
    ) -> Response:
        check_k(k)
        check_diversity(diversity)
        uid = path_text(user_id)
        got = svc.histories.peek(uid) if svc.histories.inline else None
        if not isinstance(got, History):  # not cached or stale: read off the event loop
            got = await asyncio.to_thread(svc.histories.get, uid, got)
        if got is None:
            raise HTTPException(
                404,
                f"unknown user {user_id!r}; POST /v1/recommendations with a history for new users",
            )
        categories = tuple(sorted(set(exclude_categories or [])))
        loaded = svc.loaded
        options = (k, exclude_seen, diversity, categories, explain)
        if loaded is not None:
            body = svc.lists.get((user_id, loaded.version, got.key, *options))
            if body is not None:
                svc.metrics.list_cache.labels("hit").inc()
                return json_bytes(body, loaded.version, "hit")
        svc.metrics.list_cache.labels("miss").inc()
        seq, dislikes = list(got.items), set(got.dislikes)
        exclude = set(seq) | dislikes if exclude_seen else set(dislikes)
        job = Job(user_id, seq, k, exclude_seen, exclude, set(categories), diversity, explain)
        res = await generate(job)
        body = listing_body(res, user_id)
        svc.lists.put((user_id, res["version"], got.key, *options), body)
        return json_bytes(body, res["version"], "miss")

    @app.post("/v1/recommendations")
    async def adhoc(body: AdHocIn) -> Response:
        check_k(body.k)
        check_diversity(body.diversity)
        bad = unknown_items(body.history + body.exclude_items)
        if bad:
            raise HTTPException(422, f"unknown item ids: {', '.join(map(repr, bad[:10]))}")
        history, request, sims, pseudo = list(body.history), "", None, []
        loaded = svc.loaded
        if body.query and loaded is not None and loaded.model.capabilities.reads_requests:
            request = body.query  # the model reads the sentence itself (the LM's prompt)
        elif body.query:  # else its nearest items lead the history; encoding off the loop
            pseudo, sims = await asyncio.to_thread(svc.query_history, body.query)
            history = pseudo + history
            if body.history:  # the query prior was learned on sentence-only requests
                sims = None
        # Only what the user named is "seen": a sentence's pseudo history stays eligible.
        exclude = set(body.exclude_items) | (set(body.history) if body.exclude_seen else set())
        job = Job(
            None,
            history,
            body.k,
            body.exclude_seen and not pseudo,
            exclude,
            set(body.exclude_categories),
            body.diversity,
            body.explain,
            request,
            sims,
            body.query if pseudo else "",
            len(pseudo),
        )
        res = await generate(job)
        return json_bytes(listing_body(res, None), res["version"])

    # The dependency is a default, not Annotated: a string annotation cannot name a local.
    @app.post("/v1/feedback")
    def feedback(body: FeedbackIn, allowed: str | None = Depends(feedback_auth)) -> dict:
        if allowed is not None:  # a user's own token: that user's events only, all or none
            others = sorted({e.user_id for e in body.events if e.user_id != allowed})
            if others:
                raise HTTPException(
                    403,
                    {
                        "message": f"this token may post events for user {allowed!r} only",
                        "users": others[:10],
                    },
                )
        bad = unknown_items([e.item_id for e in body.events])
        if bad:
            raise HTTPException(422, f"unknown item ids: {', '.join(map(repr, bad[:10]))}")
        now = time.time()
        events = [
            Event(
                e.user_id,
                e.item_id,
                e.type,
                e.timestamp if e.timestamp is not None else now,
                e.value,
                e.idempotency_key or "",
            )
            for e in body.events
        ]
        fresh = svc.feedback.add(events)  # returns once durable
        for e, new in zip(events, fresh, strict=True):
            if new:  # the next read sees the new history version; free the old lists now
                svc.lists.drop_user(e.user_id)
        svc.metrics.feedback.labels("stored").inc(sum(fresh))
        svc.metrics.feedback.labels("duplicate").inc(len(fresh) - sum(fresh))
        return {
            "stored": sum(fresh),
            "duplicates": len(fresh) - sum(fresh),
            "results": ["stored" if f else "duplicate" for f in fresh],
        }

    @app.get("/v1/items/{item_id}")
    def item(item_id: Annotated[str, PathParam(max_length=256)]) -> dict:
        raw = path_text(item_id)
        if raw not in svc.catalogue.titles:
            raise HTTPException(404, f"unknown item {item_id!r}")
        known = svc.loaded is not None and svc.loaded.items.index(raw) >= 0
        return {
            **svc.item_view(raw),
            "text": svc.catalogue.texts.get(raw, ""),
            "known_to_model": known,
        }

    @app.get("/v1/items")
    def items(
        query: Annotated[str, Query(min_length=1, max_length=500)],
        k: Annotated[QueryInt, Query(ge=1)] = 10,
    ) -> dict:
        check_k(k)
        vectors = svc.text_vectors()
        if vectors is None:
            raise HTTPException(422, "this catalogue has no text to search")
        from directrec.text.encoder import encode

        q = encode([path_text(query)])[0]
        sims = vectors @ q
        top = np.argsort(-sims, kind="stable")[:k]
        return {
            "query": query,
            "items": [
                {**svc.item_view(svc.catalogue.ids[i]), "score": float(sims[i])} for i in top
            ],
        }

    @app.post("/v1/admin/reload", dependencies=[Depends(admin)])
    def reload(body: ReloadIn | None = None) -> JSONResponse:
        try:
            loaded = svc.load(body.version if body else None)
        except Refused as e:  # the old version keeps serving
            serving = svc.loaded.version if svc.loaded else None
            return error_response(
                409,
                f"version refused ({e.reason}), still serving {serving or 'nothing'}: "
                f"{public(e, 'the version was refused')}",
                reason=e.reason,
                model_version=serving,
            )
        except Exception as e:
            serving = svc.loaded.version if svc.loaded else "nothing"
            reason = public(e, "the version could not be loaded")
            raise HTTPException(409, f"reload rejected, still serving {serving}: {reason}") from e
        return JSONResponse({"model_version": loaded.version})

    @app.post("/v1/admin/forget", dependencies=[Depends(admin)])
    def forget(body: ForgetIn) -> dict:
        """Delete a user's interactions and feedback from the store and every cache; the
        next update no longer learns from them."""
        try:
            deleted = svc.forget(body.user_id)
        except DataError as e:
            reason = public(e, "the store refused")
            raise HTTPException(409, f"could not forget {body.user_id!r}: {reason}") from e
        return {"user_id": body.user_id, "deleted": deleted}

    @app.post("/v1/admin/update", dependencies=[Depends(admin)], status_code=202)
    def update(body: UpdateIn | None = None) -> JSONResponse:
        """Start a background update job (one at a time): 202 with its id; 409 while one
        runs. The job publishes only a version that passes the validation gate."""
        if not registry.is_registry(cfg.model):
            raise HTTPException(409, "updates need a registry (serve --model REGISTRY_DIR)")
        from directrec.serve.update import update_model

        body = body or UpdateIn()

        def work() -> dict:
            version, facts = update_model(
                cfg.model,
                cfg.db,
                svc.feedback.source,
                cfg.model,
                epochs=body.epochs,
                tolerance=body.tolerance,
                min_gate_users=body.min_gate_users,
                canary=CanaryConfig(users=cfg.canary_users, tolerance=cfg.canary_tolerance),
            )
            if version is not None:
                svc.load(version)
            elif facts.get("refused"):  # the canary refused it before it was published
                svc.metrics.refused.labels(facts["refused"]).inc()
            if "kept_at" in facts:  # a server path stays in the log, the reply names the folder
                log.info("update kept at %s", facts["kept_at"])
                facts["kept_at"] = Path(facts["kept_at"]).name
            return {"model_version": version, **facts}

        job_id = svc.updates.start(work)
        if job_id is None:
            raise HTTPException(
                409, f"an update job is already running ({svc.updates.running_id()})"
            )
        return JSONResponse(
            {"job_id": job_id, "status": "running", "status_url": f"/v1/admin/jobs/{job_id}"}, 202
        )

    @app.get("/v1/admin/jobs/{job_id}", dependencies=[Depends(admin)])
    def job(job_id: Annotated[str, PathParam(max_length=64)]) -> dict:
        got = svc.updates.get(job_id)
        if got is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        if "error" in got:  # its text may expose internals: the server log has it
            got["error"] = f"the update failed; the server log has the details (job {job_id})"
        return got

    # Shed before anything else; read the body (size limit, deadline) before a slot. The
    # gate is shared with the HTTP protocol (protocol.py), which sheds at parse time.
    app.state.gate = Gate(svc, cfg.max_inflight, cfg.max_wait_ms / 1000)
    app.add_middleware(
        Admission,
        service=svc,
        max_inflight=cfg.max_inflight,
        max_body=cfg.max_body,
        body_timeout=cfg.body_timeout,
        gate=app.state.gate,
    )
    return app
