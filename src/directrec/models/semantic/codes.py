"""The semantic-ID model's codes: what the RQ-VAE quantises (item text, the items'
collaborative vectors, or both), the RQ-VAE fit, the unique codes and their trie."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from directrec.data.dataset import Catalog, Interactions
from directrec.models import distributed
from directrec.models.semantic.decoding import CodeTrie
from directrec.models.settings import Checks, Part, setting
from directrec.text.semantic_ids import RQVAEConfig, code_report, make_unique, train_rqvae


@dataclasses.dataclass
class CodesConfig(Part):
    """How items become codes: what the RQ-VAE quantises, its shape and training, and
    which item vectors the model keeps beside the codes."""

    part: ClassVar[str] = "codes"

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
    # cold items are scored against the items' own text vectors (kept as float16:
    # n_items × 384 × 2 bytes); the 32-d RQ-VAE latent alone loses the near-duplicate
    # detail that finds a new shade of what the user just bought (docs/results/coldstart/)
    cold_text: bool = setting(True, "score cold items against their own text vectors (float16)")

    def checks(self) -> Checks:
        return {
            "levels": (self.levels >= 1, ">= 1"),
            "codebook": (self.codebook >= 2, ">= 2"),
            "rq_latent": (self.rq_latent >= 1, ">= 1"),
            "rq_epochs": (self.rq_epochs >= 1, ">= 1"),
            "codes_from": (
                self.codes_from in ("text", "interactions", "both"),
                "text, interactions or both",
            ),
            "svd_dim": (self.svd_dim >= 1, ">= 1"),
        }


class Codes:
    """Mixed into `SemanticID`: fits and indexes the item codes."""

    config: Any
    meta: dict[str, Any]
    run: Any
    device: torch.device

    def _fit_codes(self, data: Interactions, catalog: Catalog | None) -> None:
        """Fit the RQ-VAE on the items' vectors and give every item its unique code."""
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
