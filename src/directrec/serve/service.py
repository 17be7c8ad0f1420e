"""The service's state: the served model version (swapped as a whole), the catalogue,
users' histories (read on demand, bounded cache), the feedback log, metrics, background
update jobs, and the batch function the micro-batcher runs on the model thread."""

from __future__ import annotations

import dataclasses
import fcntl
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from directrec.data.dataset import IdMap
from directrec.data.histories import Histories
from directrec.data.store import open_store
from directrec.generate.coldstart import CategoryIndex, sentence_history, sentence_inputs
from directrec.generate.context import ModelContext, item_vectors
from directrec.generate.pipeline import ListOptions, finite_or_none
from directrec.generate.pipeline import recommend as build_lists
from directrec.models.base import Recommender
from directrec.serve import registry
from directrec.serve.batcher import Batcher, lower_priority
from directrec.serve.caches import HistoryCache, ListCache
from directrec.serve.canary import CanaryConfig, Refused, check_version, clean_paths
from directrec.serve.feedback import open_feedback
from directrec.text.features import of_model

log = logging.getLogger("directrec.serve")


@dataclass
class ServeConfig:
    model: Path  # a registry directory or a plain model directory
    db: str | Path  # a DuckDB file or a PostgreSQL URL
    feedback: Path | None = None  # default: beside a DuckDB store, in a PostgreSQL one
    admin_token: str | None = None  # None: a random one is made and logged
    feedback_token: str | None = None  # None: feedback needs no token
    token_key: str | None = None  # signs per-user feedback tokens (serve/tokens.py)
    max_k: int = 100
    max_history: int = 1000  # items accepted in an ad-hoc history
    max_body: int = 1 << 20  # bytes
    header_timeout: float = 10.0  # seconds to receive a request's headers, then 408
    body_timeout: float = 10.0  # seconds to receive a request's whole body, then 408
    max_inflight: int = 64  # requests in flight before shedding
    max_wait_ms: float = 0.0  # shed when those in flight need longer than this (0: off)
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    watch_seconds: float = 2.0  # poll the registry's CURRENT (0: no watching)
    diversity_pool: int = 3  # candidates fetched per wanted item when re-ranking
    history_cache: int = 50_000  # users whose histories stay in memory (LRU)
    list_cache: int = 100_000  # finished lists kept (LRU; 0: off)
    gil_switch_ms: float = 0.5  # GIL switch interval: how long the event loop may wait
    model_nice: int = 10  # the model thread's OS priority below the event loop's (0: equal)
    model_idle: bool = False  # the model thread under SCHED_IDLE instead (Linux)
    request_timeout: float = 10.0  # seconds a request waits for its batch before a 503
    canary_users: int = 100  # stored users whose lists a version must build before a swap
    canary_tolerance: float = 0.2  # share of its reference NDCG@10 a version may lose


@dataclass
class Job:
    user: str | None  # a stored user, or None for an ad-hoc session
    history: list[str]
    k: int
    exclude_seen: bool
    exclude: set[str]
    categories: set[str]
    diversity: float | None  # None: the fitted diversify stage's weight
    explain: bool = False
    request: str = ""  # free text the model reads itself (LM backend); others get none
    query_sims: np.ndarray | None = None  # sentence-only request: item cosines (model index)
    query: str = ""  # the sentence whose nearest items lead `history` (reasons word them so)
    query_items: int = 0  # how many leading history items stand for `query`


@dataclass
class Catalogue:
    titles: dict[str, str]
    categories: dict[str, list[str]]
    texts: dict[str, str]
    ids: list[str]
    vectors: np.ndarray | None = None  # [len(ids)] text embeddings for search, if any
    views: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    category_index: CategoryIndex | None = None  # built on the first sentence that needs it

    def __post_init__(self) -> None:
        self.views = {
            i: {"item_id": i, "title": self.titles[i], "categories": list(self.categories[i])}
            for i in self.ids
        }

    def categories_as_text(self) -> CategoryIndex:
        """The category names as text vectors, in `ids` order (encoded once)."""
        if self.category_index is None:
            self.category_index = CategoryIndex.build([self.categories[i] for i in self.ids])
        return self.category_index


class UpdateJobs:
    """`POST /v1/admin/update` runs here, one job at a time, in a background thread.

    With a registry, job records live in `<registry>/.jobs/` and "one at a time" is a file
    lock there, so every worker process of `serve --workers N` (and every machine sharing
    the registry's file system) sees the same jobs."""

    def __init__(self, root: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.running: str | None = None
        self.dir = root / ".jobs" if root is not None else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, work: Callable[[], dict]) -> str | None:
        """A new job's id, or None when one is already running (in any process)."""
        with self.lock:
            if self.running is not None:
                return None
            held = None
            if self.dir is not None:
                held = open(self.dir / "lock", "a+")  # noqa: SIM115 - held by the job thread
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    held.close()
                    return None
            job_id = secrets.token_hex(8)
            self.running = job_id
            self._record(job_id, {"job_id": job_id, "status": "running", "started": time.time()})
        threading.Thread(
            target=self._run, args=(job_id, work, held), daemon=True, name=f"update-{job_id}"
        ).start()
        return job_id

    def _record(self, job_id: str, job: dict[str, Any]) -> None:
        self.jobs[job_id] = job
        if self.dir is not None:
            tmp = self.dir / f".{job_id}.json.tmp"
            tmp.write_text(json.dumps(job, default=str))
            os.replace(tmp, self.dir / f"{job_id}.json")
            (self.dir / "running").write_text(job_id if job["status"] == "running" else "")

    def _run(self, job_id: str, work: Callable[[], dict], held: Any) -> None:
        try:
            outcome = {"status": "done", "outcome": work()}
        except Exception as e:  # reported in the job, the service keeps serving
            log.exception("update job %s failed", job_id)
            outcome = {"status": "failed", "error": str(e)}
        with self.lock:
            self._record(job_id, self.jobs[job_id] | {**outcome, "finished": time.time()})
            self.running = None
            if held is not None:
                held.close()  # releases the lock

    def running_id(self) -> str | None:
        if self.running is not None or self.dir is None:
            return self.running
        f = self.dir / "running"
        return (f.read_text().strip() or None) if f.exists() else None

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None:
                return dict(job)
        if self.dir is None or not all(c in "0123456789abcdef" for c in job_id):
            return None
        f = self.dir / f"{job_id}.json"
        return json.loads(f.read_text()) if f.exists() else None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "directrec_requests_total", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "directrec_request_seconds",
            "Request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
        )
        self.shed = Counter("directrec_shed_total", "Requests shed under load", registry=r)
        self.inflight = Gauge("directrec_inflight", "Requests in flight", registry=r)
        self.batch = Histogram(
            "directrec_batch_size",
            "Requests per model call",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.feedback = Counter(
            "directrec_feedback_events_total", "Feedback events", ["result"], registry=r
        )
        self.reloads = Counter(
            "directrec_model_reloads_total", "Model swaps", ["result"], registry=r
        )
        self.version = Gauge(
            "directrec_model_info", "Served model version", ["version"], registry=r
        )
        self.list_cache = Counter(
            "directrec_list_cache_total", "List cache lookups", ["result"], registry=r
        )
        self.hit_ratio = Gauge(
            "directrec_list_cache_hit_ratio", "List cache hits / lookups", registry=r
        )
        self.refused = Counter(
            "directrec_version_refused",
            "Model versions refused before a swap (serve/canary.py)",
            ["reason"],
            registry=r,
        )


class Service:
    """Everything the endpoints share. The served model is `self.loaded`, replaced as a
    whole on reload; a batch reads it once, so in-flight work finishes on its version."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.admin_token = cfg.admin_token or secrets.token_urlsafe(24)
        self.metrics = Metrics()
        self.loaded: ModelContext | None = None
        self.reload_lock = threading.Lock()
        self.ready = False
        self.encoder_warm = False
        self.catalogue = self._read_catalogue()
        self._feature_vectors: dict[str, np.ndarray | None] = {}  # image / both, per kind
        self.feedback = open_feedback(cfg.db, cfg.feedback)
        self.histories = HistoryCache(cfg.db, self.feedback, cfg.history_cache)
        self.lists = ListCache(cfg.list_cache)
        self.metrics.hit_ratio.set_function(
            lambda: self.lists.hits / max(1, self.lists.hits + self.lists.misses)
        )
        self.updates = UpdateJobs(cfg.model if registry.is_registry(cfg.model) else None)
        self.batcher: Batcher | None = None
        self.watch_stop = threading.Event()
        self.watched = ""

    # ------------------------------------------------------------------ loading
    def _read_catalogue(self) -> Catalogue:
        with open_store(self.cfg.db) as store:
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

    def text_vectors(self) -> np.ndarray | None:
        """Catalogue text embeddings (the store's cache, else computed once in memory)."""
        c = self.catalogue
        if c.vectors is None and any(c.titles.values()):
            from directrec.text.encoder import encode

            docs = [
                ". ".join(p for p in (c.titles[i], ", ".join(c.categories[i]), c.texts[i]) if p)
                for i in c.ids
            ]
            c.vectors = encode(docs)
        if c.vectors is not None and not self.encoder_warm:  # load the query encoder now,
            from directrec.text.encoder import encode  # not during the first request

            encode(["warm-up"])
            self.encoder_warm = True
        return c.vectors

    def item_vectors(self, features: str) -> np.ndarray | None:
        """The catalogue's item vectors of `features` (text, image or both; the model's
        `item_features`), in `catalogue.ids` order: what MMR re-ranks by and what a cold
        item joins the model with, so they match what the model was fit on. Text also
        serves sentence search, whatever the model reads."""
        if features == "text":
            return self.text_vectors()
        if features not in self._feature_vectors:
            ids = IdMap(np.array(self.catalogue.ids, dtype=object))
            self._feature_vectors[features] = item_vectors(self.cfg.db, ids, features)
        return self._feature_vectors[features]

    def load(self, version: str | None = None) -> ModelContext:
        """Verify, load and canary a version (serve/canary.py: real users' lists through the
        pipeline, checked), then swap it in. A refused version raises canary.Refused (its
        reason counted in directrec_version_refused_total) and the current model keeps
        serving."""
        with self.reload_lock:
            try:
                new = self._check(version)
                self._run_jobs(new, [Job(None, [], 10, True, set(), set(), 0.0)])  # batch path
            except Exception as e:
                refused = e
                if not isinstance(e, Refused):  # its text stays in the log, not in a reply
                    log.exception("version %s could not be served", version)
                    refused = Refused(
                        "error", f"the version failed its warm-up ({type(e).__name__})"
                    )
                self.metrics.refused.labels(refused.reason).inc()
                self.metrics.reloads.labels("rejected").inc()
                if refused is e:
                    raise
                raise refused from e
            old, self.loaded = self.loaded, new
            self.lists.clear()  # keyed by version too; this frees the old version's lists
            if old is not None:
                self.metrics.version.remove(old.version)
            self.metrics.version.labels(new.version).set(1)
            self.metrics.reloads.labels("ok").inc()
            self.ready = True
            log.info("serving model version %s", new.version)
            return new

    def _check(self, version: str | None) -> ModelContext:
        """The version's context, aligned with the catalogue this service holds, after the
        canary passed; raises Refused."""
        try:
            path, label = registry.resolve(self.cfg.model, version)
        except (OSError, ValueError) as e:  # unknown name, hash mismatch, missing file
            raise Refused("integrity", clean_paths(str(e), Path(self.cfg.model), "registry")) from e
        c = self.catalogue
        self.text_vectors()
        titles = [c.titles[x] for x in c.ids]
        cats = [c.categories[x] for x in c.ids]

        def context(model: Recommender) -> ModelContext:
            vectors = self.item_vectors(of_model(model))
            return ModelContext.for_catalogue(model, c.ids, titles, cats, vectors, label)

        cfg = CanaryConfig(users=self.cfg.canary_users, tolerance=self.cfg.canary_tolerance)
        ctx, report = check_version(path, self.cfg.db, cfg, label, context)
        log.info("canary passed for %s: %s", label, report)
        return ctx

    def watch(self) -> None:
        """Poll the registry's CURRENT and swap when it names another version. Runs at the
        model thread's priority: loading and canarying a version is model work, and must
        not take the core from the event loop (nor, under SCHED_IDLE, from serving)."""
        if self.cfg.watch_seconds <= 0:
            return
        lower_priority(self.cfg.model_nice, self.cfg.model_idle)
        watch_registry = registry.is_registry(self.cfg.model)
        while not self.watch_stop.wait(self.cfg.watch_seconds):
            try:
                if self.histories.refresh():  # someone forgot a user: drop cached lists
                    self.lists.clear()
            except Exception as e:
                log.warning("could not read the store's forget epoch: %s", e)
            if not watch_registry:
                continue
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
    def _run_jobs(self, loaded: ModelContext, jobs: list[Job]) -> list[dict]:
        """One model call for a batch of requests (runs on the model thread), through the
        pipeline every other caller uses."""
        items = loaded.items
        users = [loaded.users.index(j.user) if j.user else -1 for j in jobs]
        hists = Histories.from_raw([j.history[-self.cfg.max_history :] for j in jobs], items, users)
        excludes = [idx[idx >= 0] for idx in (items.indices(sorted(j.exclude)) for j in jobs)]
        options = [
            ListOptions(
                k=min(j.k, loaded.model.n_items),
                exclude_seen=j.exclude_seen,
                exclude_categories=frozenset(j.categories),
                diversity=j.diversity,
                explain=j.explain,
                pool_factor=self.cfg.diversity_pool,
                request=j.request,
                query_sims=j.query_sims
                if j.query_sims is not None and len(j.query_sims) == loaded.model.n_items
                else None,
                query=j.query,
                # the history keeps its newest max_history items: the sentence's lead first
                query_items=max(0, j.query_items - max(0, len(j.history) - self.cfg.max_history)),
            )
            for j in jobs
        ]
        lists = build_lists(
            loaded.model, hists, options, exclude=excludes, info=loaded.info, stages=loaded.stages
        )
        self.metrics.batch.observe(len(jobs))
        out = []
        for n, rec in enumerate(lists):
            res = {
                "items": [str(items.ids[i]) for i in rec.items],
                "scores": [finite_or_none(x) for x in rec.scores],
                "fallback": rec.fallback,
                "history_used": int(hists.lengths()[n]),
            }
            if rec.reasons is not None:
                res["reasons"] = [
                    {
                        "reason": x.text,
                        "evidence": [str(items.ids[e]) for e in x.evidence],
                        "rank_places_lost": x.influence,
                    }
                    for x in rec.reasons
                ]
            out.append(res)
        return out

    def run_batch(self, jobs: list[Job]) -> list[dict]:
        loaded = self.loaded
        assert loaded is not None
        results = self._run_jobs(loaded, jobs)
        for r in results:
            r["version"] = loaded.version
        return results

    def query_history(self, query: str, n: int = 5) -> tuple[list[str], np.ndarray | None]:
        """A sentence → its nearest catalogue items (by text), as a pseudo history, and
        every model item's similarity to the sentence (for the model's learned query prior:
        text and category cosines mixed as it learned; None without a loaded model or
        where an item has no text)."""
        vectors = self.text_vectors()
        if vectors is None:
            raise HTTPException(422, "this catalogue has no text: `query` is unavailable")
        from directrec.text.encoder import encode

        loaded = self.loaded
        q = encode([query])[0]
        if loaded is None:
            idx, sims = sentence_history(q, vectors, n), None
        else:
            col = np.array([loaded.items.index(i) for i in self.catalogue.ids])
            blend = loaded.stages.query_blend
            w = blend.w if blend is not None else 0.0
            index = self.catalogue.categories_as_text() if w > 0 else None
            idx, sims = sentence_inputs(q, vectors, col, loaded.model.n_items, index, w, n)
        return [self.catalogue.ids[i] for i in idx], sims

    def forget(self, user: str) -> dict[str, int]:
        """Delete a user from the store and the feedback log, and from every cache of this
        process (other processes drop theirs when they see the store's forget epoch)."""
        deleted = self.histories.forget(user)
        events = self.feedback.forget(user)
        deleted["feedback_events"] = deleted.get("feedback_events", 0) + events
        self.histories.evict(user)  # again: an entry read between the two deletions
        self.lists.drop_user(user)
        return deleted

    def admin_ok(self, authorization: str | None) -> bool:
        """Constant-time comparison of the bearer token."""
        return hmac.compare_digest(
            (authorization or "").encode(), f"Bearer {self.admin_token}".encode()
        )

    def item_view(self, raw: str) -> dict[str, Any]:
        """The item's id, title and categories (built once per item, then shared)."""
        view = self.catalogue.views.get(raw)
        if view is None:
            view = {"item_id": raw, "title": "", "categories": []}
        return view
