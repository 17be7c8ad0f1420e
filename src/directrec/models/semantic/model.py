"""Semantic-ID generator (TIGER-style generative retrieval): the model writes the next
item's semantic ID token by token, and beam search constrained by a prefix trie of the
catalogue's IDs guarantees every generated item exists and is unseen by the user.

- Item text → all-MiniLM-L6-v2 embeddings → RQ-VAE codes (`text/semantic_ids.py`) + a
  uniqueness token: item i ↦ (c0, c1, c2, u).
- History encoder: the user's last `max_len` items, each the sum of its code-token
  embeddings (so an item never seen in training still has a representation), plus
  position embeddings.
- Code decoder: [BOS, c0, c1, c2] → predicts (c0, c1, c2, u), one output table per level,
  tied to that level's input embeddings.
- Two architectures (`arch`; compared in docs/results/ml100k-sem-*):
  `causal` (decoder-only, the default): the history encoder is causal, so every position's
  state is a context and every next item is a training target in one pass; the code
  decoder cross-attends to that single state. `encdec` (TIGER): a bidirectional encoder;
  the decoder cross-attends to the whole history; one (history, target) pair per sample.
- Generation: batched beam search over the trie; `temperature` and `sample` (Gumbel top-k,
  a stochastic beam search) trade accuracy for diversity.

Items with text but no interactions get codes too and can be generated (cold start).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models import distributed
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.semantic.cold import ColdItems
from directrec.models.semantic.decoding import CodeTrie, Decoding
from directrec.models.semantic.network import SemanticNet
from directrec.models.settings import setting
from directrec.models.training import (
    EpochRun,
    TrainConfig,
    batches,
    check,
    make_optimizer,
    rank_zero,
    train_by_epochs,
)
from directrec.text.semantic_ids import RQVAE, RQVAEConfig, code_report, make_unique, train_rqvae

# The ID-head weights tried on validation after a hybrid is trained (0: the codes alone);
# the grid reaches well past 1, where the ID head outweighs the codes.
ID_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


# ----------------------------------------------------------------------------- model
class SemanticID(Decoding, ColdItems, Recommender):
    name = "semantic-id"
    summary = "TIGER-style generator writing the next item's semantic-ID codes"
    capabilities = Capabilities(
        needs_text=True, early_stopping=True, generator=True, cold_items=True, warm_start=True
    )

    @dataclasses.dataclass
    class Config(TrainConfig):
        """The codes, the network and generation; training settings in `TrainConfig`
        (`windows` there applies to `causal`: encdec's random cuts cover every history)."""

        arch: str = setting("causal", "causal (decoder-only) | encdec (TIGER)")
        levels: int = setting(3, "semantic-ID code levels (+ one uniqueness token)")
        codebook: int = setting(256, "codes per level")
        rq_latent: int = setting(32, "RQ-VAE latent width")
        rq_epochs: int = setting(
            200, "RQ-VAE training epochs (fewer past about 30,000 steps: large catalogues)"
        )
        # what the codes quantise: item text embeddings, the items' collaborative vectors
        # (truncated SVD of the training interactions: for catalogues without useful text),
        # or both side by side
        codes_from: str = setting(
            "text", "what the codes quantise: text | interactions (collaborative vectors) | both"
        )
        svd_dim: int = setting(
            64, "collaborative vectors' width (truncated SVD) for codes_from interactions or both"
        )
        max_len: int = setting(50, "most recent items the model reads (context length)")
        dim: int = setting(128, "embedding and hidden width")
        heads: int = setting(4, "attention heads (must divide dim)")
        enc_layers: int = setting(2, "encoder (or decoder-only) Transformer blocks")
        dec_layers: int = setting(2, "decoder Transformer blocks (encdec)")
        dropout: float = setting(0.1, "dropout on embeddings, attention and residual paths")
        epochs: int = 60
        batch_size: int = 128
        lr: float = 2e-3
        windows: str = "all"
        eval_every: int = 2
        patience: int = 3
        samples_per_user: int = setting(4, "encdec: random history cuts per user per epoch")
        # causal: each batch holds windows of similar length (sorted by length within
        # 50-batch pools of shuffled windows, batches in random order), so trimming the
        # padding columns leaves little padding: an epoch on Amazon Beauty costs 0.6× the
        # random batches' (docs/results/epoch-cost/semantic-beauty.json), but the model
        # it trains there is worse (NDCG@10 0.0435 against 0.0514: docs/results/
        # beauty-semantic-id-length-batches and recipes/beauty-semantic-id-defaults-seed42)
        length_batches: bool = setting(
            False, "causal: batch windows of similar length (cheaper epochs; else random batches)"
        )
        # Settings added after configs were saved, with the value those configs ran with
        # (a saved model, a checkpoint or a result that lacks one ran this way)
        ADDED_SINCE: ClassVar[dict[str, Any]] = {"length_batches": False}
        # cold items are scored against the items' own text vectors (kept as float16:
        # n_items × 384 × 2 bytes); the 32-d RQ-VAE latent alone loses the near-duplicate
        # detail that finds a new shade of what the user just bought (docs/results/coldstart/)
        cold_text: bool = setting(True, "score cold items against their own text vectors (float16)")
        item_embedding: bool = setting(
            True, "ID + semantic hybrid: a learned input vector per item beside its codes"
        )
        # ID + semantic hybrid, output side: the encoder state also scores every item
        # (full softmax over the items' input vectors, as SASRec ties them), trained with
        # this weight beside the code loss; the beam is rescored by beam log-prob + w ·
        # that log-softmax, w chosen on validation after training (0 = no ID head)
        id_loss: float = setting(
            1.0, "weight of the ID head's full-softmax loss beside the code loss (0 = no ID head)"
        )
        # generation
        beam: int = setting(50, "beams kept per step (≥ the k you evaluate)")
        # ID + semantic hybrid: the ID head's best N unseen items join the beam's candidates,
        # each scored like a beam item (its code log-prob, teacher-forced through the same
        # decoder, + w · the ID head's); 0 = the beam's items alone
        id_candidates: int = setting(
            100, "the ID head's best unseen items that join the beam's candidates (0 = none)"
        )
        # w above: the ID head's weight in the beam's score (models with an ID head). Chosen
        # on validation after training from ID_WEIGHTS when the fit has a validator.
        id_weight: float = setting(
            1.0, "the ID head's weight in the beam's score (chosen on validation when validating)"
        )
        # How the ID head finds its proposals and scores the beam: `exact` scores every
        # item; `ivf` searches an inverted-file index over its output vectors (models/ann.py),
        # reading about `id_probe` of them per call (at 10^6 items the exact scan is most of
        # a one-user call). ivf may miss some of the head's best items, and the head's
        # log-softmax normaliser is estimated (a lower bound) rather than summed.
        id_search: str = setting(
            "exact", "the ID head's search: exact (every item) or ivf (an approximate index)"
        )
        id_probe: float = setting(0.05, "ivf: the share of the index's lists one query searches")
        temperature: float = setting(1.0, "sampling temperature of the code tokens")
        sample: bool = setting(False, "Gumbel top-k instead of top-k: diverse, stochastic lists")

        def __post_init__(self) -> None:
            if self.dp_epsilon != 0:  # its codes are fit on all users' data, outside DP-SGD
                raise ValueError(
                    "dp_epsilon is not supported by semantic-id (its item codes are learned "
                    "from every user's interactions outside DP-SGD); train sasrec-ce with it"
                )
            super().__post_init__()
            proposals = self.id_candidates >= 0 and (self.id_candidates == 0 or self.id_loss > 0)
            check(
                {
                    "arch": (self.arch in ("causal", "encdec"), "causal or encdec"),
                    "codes_from": (
                        self.codes_from in ("text", "interactions", "both"),
                        "text, interactions or both",
                    ),
                    "levels": (self.levels >= 1, ">= 1"),
                    "codebook": (self.codebook >= 2, ">= 2"),
                    "rq_latent": (self.rq_latent >= 1, ">= 1"),
                    "rq_epochs": (self.rq_epochs >= 1, ">= 1"),
                    "svd_dim": (self.svd_dim >= 1, ">= 1"),
                    "enc_layers": (self.enc_layers >= 1, ">= 1"),
                    "dec_layers": (self.dec_layers >= 1, ">= 1"),
                    "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
                    "id_weight": (self.id_weight >= 0, ">= 0"),
                    "beam": (self.beam >= 1, ">= 1"),
                    "id_loss": (self.id_loss >= 0, ">= 0"),
                    "id_candidates": (proposals, ">= 0, and > 0 only with id_loss > 0"),
                    "id_search": (self.id_search in ("exact", "ivf"), "exact or ivf"),
                    "id_probe": (0 < self.id_probe <= 1, "in (0, 1]"),
                    "temperature": (self.temperature > 0, "> 0"),
                    "dim": (self.dim >= 1, ">= 1"),
                    "heads": (
                        self.heads >= 1 and self.dim % self.heads == 0,
                        f"≥ 1 and divide dim ({self.dim})",
                    ),
                    "max_len": (self.max_len >= 1, ">= 1"),
                    "samples_per_user": (self.samples_per_user >= 1, ">= 1"),
                },
                self,
            )

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        c = self.config
        vectors = self._code_vectors(data, catalog)
        self.text_vectors = None
        if c.cold_text and c.codes_from != "interactions":
            text = torch.as_tensor(np.asarray(catalog.embeddings[: data.n_items]))  # type: ignore[union-attr]
            self.text_vectors = F.normalize(text.float(), dim=1).half()
        rq, rq_log = train_rqvae(vectors, self._rq_config(), progress=self.run.progress)
        self.rq = rq.eval()
        emb = torch.as_tensor(vectors, dtype=torch.float32)
        raw = rq.encode(emb).numpy()
        with torch.no_grad():  # the exact (unquantised) latent: cold items' dense view
            self.latent = F.normalize(rq.latent(emb), dim=1)
        # Under torchrun every rank trains against rank 0's codes (the RQ-VAE runs on each).
        codes = distributed.current().share(torch.from_numpy(make_unique(raw)))
        self.codes = codes.to(self.device)
        self.meta["codes"] = code_report(raw, c.codebook) | {"rqvae_recon": rq_log[-1]["recon"]}
        self._build_index()
        self.net = self._build().to(self.device)
        self._train(data, validator)

    def _code_vectors(self, data: Interactions, catalog: Catalog | None) -> np.ndarray:
        """[n_items, d] what the RQ-VAE quantises (see `codes_from`); each part L2-normalised
        (items without interactions get a zero collaborative part)."""
        c = self.config
        text = None
        if c.codes_from in ("text", "both"):
            if catalog is None or catalog.embeddings is None:
                raise ValueError("the semantic-ID model needs item text embeddings (--items)")
            text = np.asarray(catalog.embeddings, dtype=np.float32)[: data.n_items]
            if c.codes_from == "text":
                return text
        from scipy.sparse.linalg import svds

        m = data.matrix("binary").T.tocsr().astype(np.float64)  # items × users
        k = max(1, min(c.svd_dim, min(m.shape) - 1))
        u, sv, _ = svds(m, k=k, random_state=c.seed)
        collab = (u * np.sqrt(sv)).astype(np.float32)
        norms = np.linalg.norm(collab, axis=1, keepdims=True)
        collab = np.divide(collab, norms, out=np.zeros_like(collab), where=norms > 0)
        if text is None:
            return collab
        text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        return np.concatenate([text, collab], axis=1) / np.sqrt(2.0)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """The codes are kept; new catalogue items get theirs from the trained RQ-VAE."""
        if data.n_items > self.n_items:
            if catalog is None or catalog.embeddings is None:
                raise ValueError("semantic-id: new items need text embeddings (a catalogue)")
            self.add_items(catalog.embeddings[self.n_items : data.n_items])

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        """The epoch loop over `data` from the current weights (`train_by_epochs`: under
        torchrun every rank takes a share of each global batch, rank 0 validates; with
        `checkpoint_dir` a run resumes where one stopped, the codes being refit alike)."""
        c = self.config
        opt = make_optimizer(self.net, c)
        seqs = (data.indptr, data.item)
        histories = Histories.from_interactions(data)
        windows = torch.from_numpy(histories.training_windows(c.max_len + 1, c.windows)) - 1
        windows = windows[(windows >= 0).sum(1) >= 2]
        epoch_fn = (
            (lambda e, run: self._epoch_causal(windows, opt, e, run))
            if c.arch == "causal"
            else (lambda e, run: self._epoch(seqs, opt, e, run))
        )
        if c.id_loss > 0:  # validation during training sees the hybrid at `id_weight`
            # items without training interactions (cold) are no negatives of the ID head:
            # their item row stays zero and they keep what their codes say
            allowed = torch.from_numpy(self.popularity[: self.n_items] > 0)
            self.net.allow_ids(None if bool(allowed.all()) else allowed.to(self.device))
        train_by_epochs(self, self.net, epoch_fn, validator, opt=opt, data=data)
        valid = rank_zero(validator)
        if c.id_loss > 0 and valid is not None:
            self._choose_id_weight(valid, distributed.current())

    def _choose_id_weight(self, check: Validator, d: distributed.Dist) -> None:
        """The ID head's weight in the beam's score (`id_weight`), chosen from ID_WEIGHTS on
        the validator after training (0 = the code beam alone; ties: the smaller); rank 0
        decides under torchrun. The beam is searched once per validation batch and
        re-blended for each weight."""
        table = {}
        with self.reusing_candidates():
            for w in ID_WEIGHTS:
                self.config = dataclasses.replace(self.config, id_weight=w)
                table[w] = float(check(self))
        best = max(ID_WEIGHTS, key=lambda w: (table[w], -w))
        best = float(d.agree(best)) if d.active else best
        self.config = dataclasses.replace(self.config, id_weight=best)
        self.meta["id_weight_valid"] = {str(w): round(v, 5) for w, v in table.items()}

    def _rq_config(self) -> RQVAEConfig:
        c = self.config
        return RQVAEConfig(
            levels=c.levels,
            codebook=c.codebook,
            latent=c.rq_latent,
            epochs=c.rq_epochs,
            seed=c.seed,
        )

    def _build_index(self) -> None:
        codes = self.codes.cpu().numpy()
        self.sizes = [self.config.codebook] * self.config.levels + [int(codes[:, -1].max()) + 1]
        self.trie = CodeTrie(codes, self.sizes).to(self.device)
        self._latent = None  # item_latent() is recomputed for the new codes

    def _build(self) -> SemanticNet:
        c = self.config
        return SemanticNet(
            self.sizes,
            c.max_len,
            c.dim,
            c.heads,
            c.enc_layers,
            c.dec_layers,
            c.dropout,
            c.arch == "causal",
            self.n_items if c.item_embedding else 0,
            c.id_loss,
            self.codes,
        )

    def _epoch(
        self,
        seqs: tuple[np.ndarray, np.ndarray],
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """Each user contributes `samples_per_user` (history, next item) pairs cut at random
        positions; deterministic given (seed, epoch). With several ranks each global batch
        is split over them, the loss scaled so the averaged gradient is the batch mean; the
        batches stop when `run.stop()` says the time budget is spent."""
        c, d = self.config, run.d
        indptr, items = seqs
        dev = self.device
        rng = np.random.default_rng([c.seed, epoch])
        lengths = np.diff(indptr)
        users = np.repeat(np.flatnonzero(lengths >= 2), c.samples_per_user)
        rng.shuffle(users)
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        total, count = 0.0, 0
        for b in range(0, len(users), c.batch_size):
            if run.stop():
                break
            u = users[b : b + c.batch_size]
            cut = rng.integers(1, lengths[u])  # target position within the user's sequence
            if len(u) < d.world:
                continue  # too small to give every rank a share (all ranks skip it)
            u, cut = u[d.rank :: d.world], cut[d.rank :: d.world]
            target = items[indptr[u] + cut]
            hist, pad = self._windows(indptr[u], indptr[u] + cut, items)
            t = torch.from_numpy(target).to(dev)
            loss = run.module(self._inputs(hist), pad.to(dev), self.codes[t], t)
            share = len(u) * d.world / d.total(len(u))
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * len(u)
            count += len(u)
        return d.total(total) / max(d.total(count), 1)

    def _epoch_causal(
        self,
        windows: torch.Tensor,
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """One pass over the training windows (`windows`, -1 = padding); every position's
        state is the context for the next item, so one forward pass trains on the whole
        window (split over ranks and stopped by the budget like `_epoch`); all-padding
        columns are trimmed from each batch (`length_batches` makes them many)."""
        c, d = self.config, run.d
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.net.train()
        total, count = 0.0, 0
        for batch in batches(windows >= 0, c.batch_size, by_length=c.length_batches):
            if run.stop():
                break
            if len(batch) < d.world:
                continue
            w = windows[batch[d.rank :: d.world]]
            w = w[:, (w >= 0).any(0).nonzero().min() :].to(self.device)  # trim all-padding columns
            inp, tgt = w[:, :-1], w[:, 1:]
            targets = torch.where((tgt >= 0)[..., None], self.codes[tgt.clamp(min=0)], -1)
            loss = run.module(self._inputs(inp.clamp(min=0)), inp < 0, targets, tgt)
            n = int(((inp >= 0) & (tgt >= 0)).sum())
            share = n * d.world / max(d.total(n), 1)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
            total += float(loss.detach()) * n
            count += n
        return d.total(total) / max(d.total(count), 1)

    def _inputs(self, hist: torch.Tensor) -> torch.Tensor:
        """The encoder's input per history position: the item's codes, plus its index when
        the model has the ID + semantic item embedding (padding -1 is masked later)."""
        hist = hist.to(self.codes.device)
        codes = self.codes[hist]
        if self.net.item_emb is None:
            return codes
        return torch.cat([codes, hist.clamp(min=0).unsqueeze(-1)], -1)

    def _windows(
        self, start: np.ndarray, end: np.ndarray, items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Item windows items[max(start, end - max_len):end], left-padded (-1 = padding)."""
        width = int(min(self.config.max_len, max(int((end - start).max()), 1)))
        pos = end[:, None] - width + np.arange(width)[None, :]
        valid = pos >= start[:, None]
        hist = np.where(valid, items[np.clip(pos, 0, len(items) - 1)], -1)
        return torch.from_numpy(hist), torch.from_numpy(~valid)

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.cpu().numpy() for k, v in self.net.state_dict().items()}
        state |= {f"rq.{k}": v.detach().cpu().numpy() for k, v in self.rq.state_dict().items()}
        state["codes"] = self.codes.cpu().numpy()
        if getattr(self, "latent", None) is not None:
            state["latent"] = self.latent.cpu().numpy()
        if getattr(self, "text_vectors", None) is not None:
            state["text_vectors"] = self.text_vectors.cpu().numpy()
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        c, n = self.config, self.n_items
        mean = state.get("rq.mean")  # the RQ-VAE's input size: the vectors it was fit on
        if mean is None or mean.ndim != 1:
            raise ValueError("weights.safetensors: model.rq.mean is missing or not a vector")
        self.rq = RQVAE(int(mean.shape[0]), self._rq_config())
        self._load_module(self.rq, state, "rq.")
        self.rq.eval()
        rest = {k: v for k, v in state.items() if not k.startswith(("rq.", "net.", "head."))}
        spec: dict[str, tuple] = {"codes": ((n, c.levels + 1), ("int64",))}
        if "latent" in rest:
            spec["latent"] = ((n, c.rq_latent), ("float32",))
        if "text_vectors" in rest:  # optional: cold items' text (kept in half precision)
            spec["text_vectors"] = ((n, None), ("float16",))
        self._expect(rest, spec)
        codes = state["codes"]
        if n and (codes.min() < 0 or codes[:, : c.levels].max() >= c.codebook):
            raise ValueError(f"weights.safetensors: model.codes fall outside 0..{c.codebook - 1}")
        self.codes = torch.from_numpy(codes).to(self.device)
        self.latent = torch.from_numpy(state["latent"]) if "latent" in state else None
        tv = state.get("text_vectors")
        self.text_vectors = torch.from_numpy(tv) if tv is not None else None
        self._build_index()
        self.net = self._build()
        self._load_module(self.net, state, "net.")
        self.net.to(self.device).eval()
