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

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.semantic.codes import Codes, CodesConfig
from directrec.models.semantic.cold import ColdItems
from directrec.models.semantic.decoding import Decoding, SemanticDecoding
from directrec.models.semantic.network import SemanticNet, SemanticNetConfig
from directrec.models.semantic.train import Training
from directrec.models.settings import Checks, TrainConfig, setting
from directrec.text.semantic_ids import RQVAE


# ----------------------------------------------------------------------------- model
class SemanticID(Codes, Training, Decoding, ColdItems, Recommender):
    name = "semantic-id"
    summary = "TIGER-style generator writing the next item's semantic-ID codes"
    capabilities = Capabilities(
        needs_text=True, early_stopping=True, generator=True, cold_items=True, warm_start=True
    )

    @dataclasses.dataclass
    class Config(CodesConfig, SemanticNetConfig, SemanticDecoding, TrainConfig):
        """The codes (`CodesConfig`), the network (`SemanticNetConfig`), decoding
        (`SemanticDecoding`) and how it trains: the ID head's loss and the batches here, the
        rest in `TrainConfig` (`windows` there applies to `causal`: encdec's random cuts
        cover every history)."""

        part: ClassVar[str] = "training"  # of the settings declared here

        epochs: int = 60
        batch_size: int = 128
        lr: float = 2e-3
        windows: str = "all"
        eval_every: int = 2
        patience: int = 3
        # ID + semantic hybrid, output side: the encoder state also scores every item
        # (full softmax over the items' input vectors, as SASRec ties them), trained with
        # this weight beside the code loss; the beam is rescored by beam log-prob + w ·
        # that log-softmax, w chosen on validation after training (0 = no ID head)
        id_loss: float = setting(
            1.0, "weight of the ID head's full-softmax loss beside the code loss (0 = no ID head)"
        )
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

        def checks(self) -> Checks:
            return {
                "id_loss": (self.id_loss >= 0, ">= 0"),
                # the ID head proposes candidates only where there is one
                "id_candidates": (
                    self.id_candidates == 0 or self.id_loss > 0,
                    "0 without an ID head (id_loss = 0)",
                ),
                "samples_per_user": (self.samples_per_user >= 1, ">= 1"),
            }

        def __post_init__(self) -> None:
            if self.dp_epsilon != 0:  # its codes are fit on all users' data, outside DP-SGD
                raise ValueError(
                    "dp_epsilon is not supported by semantic-id (its item codes are learned "
                    "from every user's interactions outside DP-SGD); train sasrec-ce with it"
                )
            super().__post_init__()

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        self._fit_codes(data, catalog)
        self.net = self._build().to(self.device)
        self._train(data, validator)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """The codes are kept; new catalogue items get theirs from the trained RQ-VAE."""
        if data.n_items > self.n_items:
            if catalog is None or catalog.embeddings is None:
                raise ValueError("semantic-id: new items need text embeddings (a catalogue)")
            self.add_items(catalog.embeddings[self.n_items : data.n_items])

    def _build(self) -> SemanticNet:
        c = self.config
        return SemanticNet(self.sizes, SemanticNetConfig.of(c), self.n_items, c.id_loss, self.codes)

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
