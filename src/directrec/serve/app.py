"""The HTTP service: generated lists, ad-hoc sessions, durable feedback, item search, a
model registry with hot swaps, Prometheus metrics, and the web page at `/`.

Request flow: validate (bounded sizes, structured 4xx) → shed if too many requests are in
flight (fast 503 + Retry-After) → micro-batch concurrent recommendation requests into one
model call on the model thread → respond with the model version in `X-Model-Version`.
Histories are the store's interactions plus feedback received since, so a like shows up in
the next list at once; `directrec update` folds the feedback into the weights.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from directrec.data.dataset import IdMap
from directrec.data.histories import Histories
from directrec.data.preprocess import chronological_order
from directrec.data.store import Store
from directrec.generate.coldstart import sentence_history
from directrec.generate.pipeline import ItemInfo, ListOptions, finite_or_none
from directrec.generate.pipeline import recommend as build_lists
from directrec.models import load_model
from directrec.models.base import Recommender
from directrec.serve import registry
from directrec.serve.batcher import Batcher, Overloaded
from directrec.serve.feedback import EVENT_TYPES, Event, FeedbackLog, default_path

log = logging.getLogger("directrec.serve")
PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServeConfig:
    model: Path  # a registry directory or a plain model directory
    db: Path
    feedback: Path | None = None  # default: beside the store
    admin_token: str | None = None  # None: a random one is made and logged
    feedback_token: str | None = None  # None: feedback needs no token
    max_k: int = 100
    max_history: int = 1000  # items accepted in an ad-hoc history
    max_body: int = 1 << 20  # bytes
    max_inflight: int = 64  # requests in flight before shedding
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    watch_seconds: float = 2.0  # poll the registry's CURRENT (0: no watching)
    diversity_pool: int = 3  # candidates fetched per wanted item when re-ranking


# ----------------------------------------------------------------------------- schemas
def _text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("not valid unicode text") from e
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


Id = Annotated[str, Field(min_length=1, max_length=256)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    user_id: Id
    item_id: Id
    type: str = Field(description="one of " + ", ".join(EVENT_TYPES))
    timestamp: float | None = Field(None, ge=0, le=1e11, allow_inf_nan=False)
    value: float | None = Field(None, ge=-1e6, le=1e6, allow_inf_nan=False)
    idempotency_key: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("user_id", "item_id", "idempotency_key")
    @classmethod
    def _ok_text(cls, v: str | None) -> str | None:
        return None if v is None else _text(v)

    @field_validator("type")
    @classmethod
    def _ok_type(cls, v: str) -> str:
        if v not in EVENT_TYPES:
            raise ValueError("must be one of " + ", ".join(EVENT_TYPES))
        return v


class FeedbackIn(Strict):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class AdHocIn(Strict):
    history: list[Id] = Field(default_factory=list, max_length=1000)
    query: str | None = Field(
        None, min_length=1, max_length=500,
        description="a new user's wish in words: its nearest items become the history",
    )  # fmt: skip
    k: int = Field(10, ge=1)
    exclude_seen: bool = True
    exclude_items: list[Id] = Field(default_factory=list, max_length=1000)
    exclude_categories: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=100
    )
    diversity: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    explain: bool = False

    @field_validator("history", "exclude_items", "exclude_categories")
    @classmethod
    def _ok_texts(cls, v: list[str]) -> list[str]:
        return [_text(x) for x in v]

    @field_validator("query")
    @classmethod
    def _ok_query(cls, v: str | None) -> str | None:
        return None if v is None else _text(v)


class ReloadIn(Strict):
    version: str | None = Field(None, max_length=64)


class UpdateIn(Strict):
    epochs: int = Field(2, ge=1, le=50)


# ----------------------------------------------------------------------------- state
@dataclass
class Loaded:
    """One model version, ready to serve. Immutable once built: a swap replaces it."""

    model: Recommender
    version: str
    items: IdMap
    users: IdMap
    info: ItemInfo  # titles, categories, text vectors aligned with the model's items


@dataclass
class Job:
    user: str | None  # a stored user, or None for an ad-hoc session
    history: list[str]
    k: int
    exclude_seen: bool
    exclude: set[str]
    categories: set[str]
    diversity: float
    explain: bool = False


@dataclass
class Catalogue:
    titles: dict[str, str]
    categories: dict[str, list[str]]
    texts: dict[str, str]
    ids: list[str]
    vectors: np.ndarray | None = None  # [len(ids)] text embeddings for search, if any


@dataclass
class UserHistories:
    """Each user's items (raw ids, oldest first) from the store, then positive feedback;
    disliked items are kept apart and never recommended."""

    seq: dict[str, list[str]] = field(default_factory=dict)
    dislikes: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, e: Event) -> None:
        with self.lock:
            if e.positive:
                self.seq.setdefault(e.user_id, []).append(e.item_id)
                self.dislikes.get(e.user_id, set()).discard(e.item_id)
            else:
                self.dislikes.setdefault(e.user_id, set()).add(e.item_id)

    def get(self, user: str) -> tuple[list[str], set[str]] | None:
        with self.lock:
            if user not in self.seq and user not in self.dislikes:
                return None
            return list(self.seq.get(user, [])), set(self.dislikes.get(user, set()))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("directrec_requests_total", "HTTP requests",
                                ["route", "method", "status"], registry=r)  # fmt: skip
        self.latency = Histogram(
            "directrec_request_seconds", "Request latency", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.shed = Counter("directrec_shed_total", "Requests shed under load", registry=r)
        self.inflight = Gauge("directrec_inflight", "Requests in flight", registry=r)
        self.batch = Histogram("directrec_batch_size", "Requests per model call", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64))  # fmt: skip
        self.feedback = Counter("directrec_feedback_events_total", "Feedback events",
                                ["result"], registry=r)  # fmt: skip
        self.reloads = Counter("directrec_model_reloads_total", "Model swaps", ["result"],
                               registry=r)  # fmt: skip
        self.version = Gauge("directrec_model_info", "Served model version", ["version"],
                             registry=r)  # fmt: skip


class Service:
    """Everything the endpoints share. The served model is `self.loaded`, replaced as a
    whole on reload; a batch reads it once, so in-flight work finishes on its version."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.admin_token = cfg.admin_token or secrets.token_urlsafe(24)
        self.metrics = Metrics()
        self.loaded: Loaded | None = None
        self.reload_lock = threading.Lock()
        self.ready = False
        self.encoder_warm = False
        self.catalogue = self._read_catalogue()
        self.histories = self._read_histories()
        self.feedback = FeedbackLog(cfg.feedback or default_path(cfg.db))
        for _, e in self.feedback.events():
            self.histories.add(e)
        self.batcher: Batcher | None = None
        self.watch_stop = threading.Event()
        self.watched = ""

    # ------------------------------------------------------------------ loading
    def _read_catalogue(self) -> Catalogue:
        with Store(self.cfg.db) as store:
            items = store.items()
            from directrec.text.encoder import MODEL_NAME

            ids = items["item_id"].astype(str).tolist()
            vectors = store.embeddings(MODEL_NAME, ids) if ids else None
        return Catalogue(
            titles=dict(zip(ids, items["title"].fillna("").astype(str), strict=True)),
            categories=dict(zip(ids, items["categories"], strict=True)),
            texts=dict(zip(ids, items["text"].fillna("").astype(str), strict=True)),
            ids=ids,
            vectors=vectors,
        )

    def _read_histories(self) -> UserHistories:
        with Store(self.cfg.db) as store:
            inter = store.interactions()
        inter = inter.iloc[chronological_order(inter)]
        h = UserHistories()
        for user, items in inter.groupby(inter["user_id"].astype(str), sort=False)["item_id"]:
            h.seq[user] = items.astype(str).tolist()
        return h

    def text_vectors(self) -> np.ndarray | None:
        """Catalogue text embeddings (the store's cache, else computed once in memory)."""
        c = self.catalogue
        if c.vectors is None and any(c.titles.values()):
            from directrec.text.encoder import encode

            docs = [". ".join(p for p in (c.titles[i], ", ".join(c.categories[i]), c.texts[i])
                              if p) for i in c.ids]  # fmt: skip
            c.vectors = encode(docs)
        if c.vectors is not None and not self.encoder_warm:  # load the query encoder now,
            from directrec.text.encoder import encode  # not during the first request

            encode(["warm-up"])
            self.encoder_warm = True
        return c.vectors

    def load(self, version: str | None = None) -> Loaded:
        """Verify, load and warm a version, then swap it in. On any error the current
        model keeps serving and the error propagates (the caller reports it)."""
        with self.reload_lock:
            try:
                path, label = registry.resolve(self.cfg.model, version)
                model = load_model(path)
                items = IdMap(np.array(model.meta.get("item_ids", []), dtype=object))
                if len(items) != model.n_items:
                    raise ValueError(f"{path}: the model carries no item id map")
                vectors = None
                text = self.text_vectors()
                if text is not None:
                    pos = {x: n for n, x in enumerate(self.catalogue.ids)}
                    cold = [x for x in self.catalogue.ids if items.index(x) < 0]
                    if cold and model.capabilities.cold_items:  # new catalogue items, no retraining
                        model.add_items(text[[pos[x] for x in cold]])
                        items = IdMap(np.concatenate([items.ids, np.array(cold, dtype=object)]))
                        model.meta["item_ids"] = items.ids.tolist()
                        log.info("%d catalogue items new to the model were given codes", len(cold))
                    vectors = np.zeros((model.n_items, text.shape[1]), dtype=np.float32)
                    for n, raw in enumerate(items.ids):
                        if str(raw) in pos:
                            vectors[n] = text[pos[str(raw)]]
                cats = [self.catalogue.categories.get(str(x), []) for x in items.ids]
                users = IdMap(np.array(model.meta.get("user_ids", []), dtype=object))
                titles = [self.catalogue.titles.get(str(x), "") for x in items.ids]
                new = Loaded(model, label, items, users, ItemInfo(titles, cats, vectors))
                self._run_jobs(new, [Job(None, [], 10, True, set(), set(), 0.0)])  # warm-up
            except Exception:
                self.metrics.reloads.labels("rejected").inc()
                raise
            old, self.loaded = self.loaded, new
            if old is not None:
                self.metrics.version.remove(old.version)
            self.metrics.version.labels(label).set(1)
            self.metrics.reloads.labels("ok").inc()
            self.ready = True
            log.info("serving model version %s", label)
            return new

    def watch(self) -> None:
        """Poll the registry's CURRENT and swap when it names another version."""
        if self.cfg.watch_seconds <= 0 or not registry.is_registry(self.cfg.model):
            return
        while not self.watch_stop.wait(self.cfg.watch_seconds):
            try:
                name = registry.current(self.cfg.model)
            except (OSError, ValueError):
                continue
            if self.loaded is not None and name != self.loaded.version and name != self.watched:
                self.watched = name  # try each new name once; a bad one is not retried
                try:
                    self.load(name)
                except Exception as e:
                    log.warning("rejected model version %s: %s", name, e)

    # ------------------------------------------------------------------ generation
    def _run_jobs(self, loaded: Loaded, jobs: list[Job]) -> list[dict]:
        """One model call for a batch of requests (runs on the model thread), through the
        pipeline every other caller uses."""
        items = loaded.items
        users = [loaded.users.index(j.user) if j.user else -1 for j in jobs]
        hists = Histories.from_raw([j.history[-self.cfg.max_history :] for j in jobs], items,
                                   users)  # fmt: skip
        excludes = [idx[idx >= 0] for idx in (items.indices(sorted(j.exclude)) for j in jobs)]
        options = [
            ListOptions(k=min(j.k, loaded.model.n_items), exclude_seen=j.exclude_seen,
                        exclude_categories=frozenset(j.categories), diversity=j.diversity,
                        explain=j.explain, pool_factor=self.cfg.diversity_pool)
            for j in jobs
        ]  # fmt: skip
        lists = build_lists(loaded.model, hists, options, exclude=excludes, info=loaded.info)
        self.metrics.batch.observe(len(jobs))
        out = []
        for n, rec in enumerate(lists):
            res = {"items": [str(items.ids[i]) for i in rec.items],
                   "scores": [finite_or_none(x) for x in rec.scores],
                   "fallback": rec.fallback, "history_used": int(hists.lengths()[n])}  # fmt: skip
            if rec.reasons is not None:
                res["reasons"] = [{"reason": x.text, "evidence": [str(items.ids[e]) for e in x.evidence],
                                   "rank_places_lost": x.influence} for x in rec.reasons]  # fmt: skip
            out.append(res)
        return out

    def run_batch(self, jobs: list[Job]) -> list[dict]:
        loaded = self.loaded
        assert loaded is not None
        results = self._run_jobs(loaded, jobs)
        for r in results:
            r["version"] = loaded.version
        return results

    def query_history(self, query: str, n: int = 5) -> list[str]:
        """A sentence → its nearest catalogue items (by text), as a pseudo history."""
        vectors = self.text_vectors()
        if vectors is None:
            raise HTTPException(422, "this catalogue has no text: `query` is unavailable")
        from directrec.text.encoder import encode

        loaded = self.loaded
        allowed = None
        if loaded is not None:
            allowed = np.array([loaded.items.index(i) >= 0 for i in self.catalogue.ids])
        idx = sentence_history(encode([query])[0], vectors, n, allowed)
        return [self.catalogue.ids[i] for i in idx]

    def item_view(self, raw: str) -> dict[str, Any]:
        c = self.catalogue
        return {
            "item_id": raw,
            "title": c.titles.get(raw, ""),
            "categories": list(c.categories.get(raw, [])),
        }


# ----------------------------------------------------------------------------- app
def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **extra}}, status)


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over `limit` bytes, by Content-Length or by
    counting a streamed body, before the app reads it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    resp = _error(413, f"request body over {self.limit} bytes")
                    return await resp(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(cfg: ServeConfig) -> FastAPI:
    svc = Service(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.batcher = Batcher(svc.run_batch, cfg.max_batch, cfg.batch_wait_ms / 1000,
                              max_queue=cfg.max_inflight * 4)  # fmt: skip
        svc.batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, svc.load)
        watcher = threading.Thread(target=svc.watch, daemon=True, name="registry-watch")
        watcher.start()
        yield
        svc.watch_stop.set()
        await svc.batcher.stop()
        svc.feedback.close()

    app = FastAPI(title="directrec", version="1", lifespan=lifespan,
                  description="Generated recommendation lists, feedback, items.")  # fmt: skip
    app.state.service = svc

    # -------------------------------------------------------------- middleware
    shed_paths = ("/v1/users", "/v1/recommendations", "/v1/feedback", "/v1/items")
    inflight = 0

    @app.middleware("http")
    async def observe(request: Request, call_next):
        nonlocal inflight
        route = request.url.path
        route = ("/v1/users/{id}/recommendations" if route.endswith("/recommendations")
                 and route.startswith("/v1/users/") else
                 "/v1/users/{id}" if route.startswith("/v1/users/") else
                 "/v1/items/{id}" if route.startswith("/v1/items/") else route)  # fmt: skip
        if route not in _ROUTES:
            route = "other"
        start = time.perf_counter()
        if request.url.path.startswith(shed_paths) and inflight >= cfg.max_inflight:
            svc.metrics.shed.inc()
            resp: Response = _error(503, "overloaded; retry shortly")
            resp.headers["Retry-After"] = "1"
        else:
            inflight += 1
            svc.metrics.inflight.set(inflight)
            try:
                resp = await call_next(request)
            finally:
                inflight -= 1
                svc.metrics.inflight.set(inflight)
        if svc.loaded is not None and "x-model-version" not in resp.headers:
            resp.headers["X-Model-Version"] = svc.loaded.version
        svc.metrics.requests.labels(route, request.method, str(resp.status_code)).inc()
        svc.metrics.latency.labels(route).observe(time.perf_counter() - start)
        return resp

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        resp = _error(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                  for e in exc.errors()][:20]  # fmt: skip
        return _error(422, "invalid request", fields=fields)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal error")

    # -------------------------------------------------------------- helpers
    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization != f"Bearer {svc.admin_token}":
            raise HTTPException(401, "admin endpoints need Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    def feedback_auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if cfg.feedback_token and authorization != f"Bearer {cfg.feedback_token}":
            raise HTTPException(401, "feedback needs Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    def check_k(k: int) -> None:
        if k > cfg.max_k:
            raise HTTPException(422, f"k must be at most {cfg.max_k}")

    def unknown_items(ids: list[str]) -> list[str]:
        known = svc.catalogue.titles
        model_items = svc.loaded.items if svc.loaded is not None else None
        return [
            i for i in ids if i not in known and (model_items is None or model_items.index(i) < 0)
        ]

    async def generate(job: Job) -> dict:
        if not svc.ready or svc.batcher is None:
            raise HTTPException(503, "model not loaded yet", headers={"Retry-After": "1"})
        try:
            return await svc.batcher.submit(job)
        except Overloaded:
            svc.metrics.shed.inc()
            raise HTTPException(
                503, "overloaded; retry shortly", headers={"Retry-After": "1"}
            ) from None

    def listing(res: dict, user: str | None) -> JSONResponse:
        items = [{"rank": n + 1, **svc.item_view(i), "score": s}
                 for n, (i, s) in enumerate(zip(res["items"], res["scores"], strict=True))]  # fmt: skip
        for it, why in zip(items, res.get("reasons", []), strict=False):
            it.update(why)
        body = {"user_id": user, "model_version": res["version"], "fallback": res["fallback"],
                "history_used": res["history_used"], "items": items}  # fmt: skip
        return JSONResponse(body, headers={"X-Model-Version": res["version"]})

    # -------------------------------------------------------------- endpoints
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if not svc.ready or svc.loaded is None:
            return _error(503, "not ready")
        return JSONResponse({"status": "ready", "model_version": svc.loaded.version})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry),
                        media_type="text/plain; version=0.0.4")  # fmt: skip

    @app.get("/v1/users")
    def users(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
        with svc.histories.lock:
            ids = list(svc.histories.seq)[:limit]
        return {"users": ids}

    @app.get("/v1/users/{user_id}")
    def user(user_id: Annotated[str, PathParam(max_length=256)],
             limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict:  # fmt: skip
        got = svc.histories.get(_path_text(user_id))
        if got is None:
            raise HTTPException(404, f"unknown user {user_id!r}")
        seq, dislikes = got
        return {"user_id": user_id, "interactions": len(seq),
                "history": [svc.item_view(i) for i in reversed(seq[-limit:])],
                "dislikes": sorted(dislikes)[:limit]}  # fmt: skip

    @app.get("/v1/users/{user_id}/recommendations")
    async def user_recommendations(
        user_id: Annotated[str, PathParam(max_length=256)],
        k: Annotated[int, Query(ge=1)] = 10,
        exclude_seen: bool = True,
        diversity: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0,
        exclude_categories: Annotated[list[str] | None, Query(max_length=100)] = None,
        explain: bool = False,
    ) -> JSONResponse:
        check_k(k)
        got = svc.histories.get(_path_text(user_id))
        if got is None:
            raise HTTPException(404, f"unknown user {user_id!r}; POST /v1/recommendations "
                                     "with a history for new users")  # fmt: skip
        seq, dislikes = got
        exclude = set(seq) | dislikes if exclude_seen else dislikes
        job = Job(user_id, seq, k, exclude_seen, exclude, set(exclude_categories or []),
                  diversity, explain)  # fmt: skip
        return listing(await generate(job), user_id)

    @app.post("/v1/recommendations")
    async def adhoc(body: AdHocIn) -> JSONResponse:
        check_k(body.k)
        bad = unknown_items(body.history + body.exclude_items)
        if bad:
            raise HTTPException(422, f"unknown item ids: {', '.join(map(repr, bad[:10]))}")
        history = list(body.history)
        if body.query:
            history = svc.query_history(body.query) + history
        exclude = set(body.exclude_items) | (set(body.history) if body.exclude_seen else set())
        job = Job(None, history, body.k, body.exclude_seen, exclude,
                  set(body.exclude_categories), body.diversity, body.explain)  # fmt: skip
        return listing(await generate(job), None)

    @app.post("/v1/feedback", dependencies=[Depends(feedback_auth)])
    def feedback(body: FeedbackIn) -> dict:
        bad = unknown_items([e.item_id for e in body.events])
        if bad:
            raise HTTPException(422, f"unknown item ids: {', '.join(map(repr, bad[:10]))}")
        now = time.time()
        events = [Event(e.user_id, e.item_id, e.type, e.timestamp if e.timestamp is not None
                        else now, e.value, e.idempotency_key or "") for e in body.events]  # fmt: skip
        fresh = svc.feedback.add(events)  # returns once durable
        for e, new in zip(events, fresh, strict=True):
            if new:
                svc.histories.add(e)
        svc.metrics.feedback.labels("stored").inc(sum(fresh))
        svc.metrics.feedback.labels("duplicate").inc(len(fresh) - sum(fresh))
        return {"stored": sum(fresh), "duplicates": len(fresh) - sum(fresh),
                "results": ["stored" if f else "duplicate" for f in fresh]}  # fmt: skip

    @app.get("/v1/items/{item_id}")
    def item(item_id: Annotated[str, PathParam(max_length=256)]) -> dict:
        raw = _path_text(item_id)
        if raw not in svc.catalogue.titles:
            raise HTTPException(404, f"unknown item {item_id!r}")
        known = svc.loaded is not None and svc.loaded.items.index(raw) >= 0
        return {**svc.item_view(raw), "text": svc.catalogue.texts.get(raw, ""),
                "known_to_model": known}  # fmt: skip

    @app.get("/v1/items")
    def items(
        query: Annotated[str, Query(min_length=1, max_length=500)],
        k: Annotated[int, Query(ge=1)] = 10,
    ) -> dict:
        check_k(k)
        vectors = svc.text_vectors()
        if vectors is None:
            raise HTTPException(422, "this catalogue has no text to search")
        from directrec.text.encoder import encode

        q = encode([_path_text(query)])[0]
        sims = vectors @ q
        top = np.argsort(-sims, kind="stable")[:k]
        return {"query": query, "items": [{**svc.item_view(svc.catalogue.ids[i]),
                                           "score": float(sims[i])} for i in top]}  # fmt: skip

    @app.post("/v1/admin/reload", dependencies=[Depends(admin)])
    def reload(body: ReloadIn | None = None) -> dict:
        try:
            loaded = svc.load(body.version if body else None)
        except Exception as e:
            raise HTTPException(409, f"reload rejected, still serving "
                                     f"{svc.loaded.version if svc.loaded else 'nothing'}: {e}") from e  # fmt: skip
        return {"model_version": loaded.version}

    @app.post("/v1/admin/update", dependencies=[Depends(admin)])
    def update(body: UpdateIn | None = None) -> dict:
        if not registry.is_registry(cfg.model):
            raise HTTPException(409, "updates need a registry (serve --model REGISTRY_DIR)")
        from directrec.serve.update import update_model

        version, facts = update_model(cfg.model, cfg.db, svc.feedback.path, cfg.model,
                                      epochs=(body.epochs if body else 2))  # fmt: skip
        svc.load(version)
        return {"model_version": version, **facts}

    app.add_middleware(BodyLimit, limit=cfg.max_body)
    return app


_ROUTES = {"/", "/healthz", "/readyz", "/metrics", "/v1/users", "/v1/users/{id}",
           "/v1/users/{id}/recommendations", "/v1/recommendations", "/v1/feedback",
           "/v1/items/{id}", "/v1/items", "/v1/admin/reload", "/v1/admin/update"}  # fmt: skip


def _path_text(v: str) -> str:
    try:
        return _text(v)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
