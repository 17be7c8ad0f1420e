"""Cold items: what the model knows of items it never trained on (their text, their
RQ-VAE latent, the ID head's view through their codes), for the `ColdGate` stage
(generate/stages.py), and new catalogue items made generable without retraining."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from directrec.data.histories import Histories


class ColdItems:
    """The semantic-ID model's cold-item methods (mixed into `SemanticID`)."""

    def cold_items(self) -> np.ndarray:
        """Items the generator never saw a user take (no training interactions): TIGER's
        beam almost never writes them, since their codes were never a target."""
        return np.flatnonzero(self.popularity[: self.n_items] <= 0)

    def item_latent(self) -> torch.Tensor:
        """Each item's point in the RQ-VAE's latent space, L2-normalised: the model's own
        dense view of what an item is about. The exact encoder output where the model kept
        it (models that kept none: the sum of the item's code vectors)."""
        latent = getattr(self, "latent", None)
        if latent is not None and len(latent) == self.n_items:
            return latent
        if getattr(self, "_latent", None) is None or len(self._latent) != self.n_items:
            books = self.rq.codebooks.detach().cpu()
            codes = self.codes.cpu()
            z = sum(books[j][codes[:, j]] for j in range(books.shape[0]))
            self._latent = F.normalize(z, dim=1)
        return self._latent

    @torch.no_grad()
    def cold_similarity(
        self,
        histories: Histories,
        items: torch.Tensor,
        logp: torch.Tensor,
        mix: float,
        view: str = "latent",
        id_cold: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, n_cold] cosine between each cold item and where the user is heading.

        `view="latent"` (RQ-VAE latent): the generated list's centroid (items weighted by
        their beam probability), mixed with weight `mix` with the centroid of the user's
        last 3 items.
        `view="text"` (the items' text vectors): (1 − mix) · the best match among the last
        3 items (0.05 less per step back) + mix · the cosine to the beam's centroid.
        `view="id"` (models with an ID head): (1 − mix) · the head's log-probability / 10
        + mix · the text view's score; cold items were never the head's negatives, so it
        reads them through their codes (`id_cold`: those log-probabilities [B, n_cold]
        when the caller already has them, e.g. `cold_id_logp`, else they are computed).
        Either way cold items come in through the same generation step, LIGER-style dense
        scoring of the beam."""
        if view == "id":  # the ID head's own log-probability of each cold item (/10)
            ids = (self.cold_id_logp(histories) if id_cold is None else id_cold) / 10.0
            if mix > 0 and getattr(self, "text_vectors", None) is not None:
                text = self.cold_similarity(histories, items, logp, 0.0, "text")
                return (1 - mix) * ids + mix * text
            return ids
        text = view == "text"
        if text and getattr(self, "text_vectors", None) is None:
            raise ValueError("semantic-id: this model kept no text vectors for cold items")
        z = self.text_vectors.float() if text else self.item_latent()
        ok = items >= 0
        w = torch.softmax(torch.where(ok, logp, -torch.inf), dim=1).nan_to_num(0.0)
        beam = F.normalize((w.unsqueeze(-1) * z[items.clamp(min=0)]).sum(1), dim=1)
        zc = z[torch.from_numpy(self.cold_items())]
        if text:
            best = torch.full((len(histories), len(zc)), -2.0)
            lo, hi = histories.indptr[:-1], histories.indptr[1:]
            seq = histories.items if len(histories.items) else np.zeros(1, np.int64)
            for back in range(3):
                pos = hi - 1 - back
                has = torch.from_numpy(pos >= lo)
                at = torch.from_numpy(seq[np.clip(pos, 0, len(seq) - 1)])
                s = z[at] @ zc.T - 0.05 * back
                best = torch.where(has.unsqueeze(1), torch.maximum(best, s), best)
            best = torch.where(best > -2.0, best, beam @ zc.T)  # no history: the beam alone
            return (1 - mix) * best + mix * (beam @ zc.T)
        start = np.maximum(histories.indptr[1:] - 3, histories.indptr[:-1])
        hist, pad = self._windows(start, histories.indptr[1:], histories.items)
        keep = (~pad).float().unsqueeze(-1)
        recent = F.normalize((z[hist.clamp(min=0)] * keep).sum(1), dim=1)
        v = F.normalize((1 - mix) * beam + mix * recent, dim=1)
        return v @ zc.T

    @torch.no_grad()
    def cold_id_logp(self, histories: Histories) -> torch.Tensor:
        """[B, n_cold] the ID head's log-softmax of each cold item after each history (CPU),
        in batches (only the cold columns are kept: the full matrix of a validation set is
        GBs)."""
        if self.net.id_loss <= 0:
            raise ValueError("semantic-id: the `id` view needs a model with an ID head")
        cold = torch.from_numpy(self.cold_items())
        out, indptr = [], histories.indptr
        self.net.eval()
        for b in range(0, len(histories), 1024):
            lo, hi = indptr[:-1][b : b + 1024], indptr[1:][b : b + 1024]
            hist, pad = self._windows(lo, hi, histories.items)
            memory = self.net.encode(self._inputs(hist), pad.to(self.device))
            logp = F.log_softmax(self.net.id_logits(memory[:, -1]).float(), -1)
            out.append(logp.cpu()[:, cold])
        return torch.cat(out) if out else torch.zeros(0, len(cold))

    # -------------------------------------------------------------- artefacts
    @torch.no_grad()
    def add_items(self, embeddings: np.ndarray) -> np.ndarray:
        """Make new items (text embeddings only, no interactions) generable without
        retraining: the trained RQ-VAE gives their codes, a uniqueness token follows the
        items already sharing that code, the trie grows. Returns their new indices."""
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError("expected a non-empty [n, dim] array of embeddings")
        if self.config.codes_from == "interactions":
            raise ValueError(
                "semantic-id: codes_from=interactions has no codes for text-only items; "
                "refit with the new items' interactions, or use codes_from=text or both"
            )
        if self.config.codes_from == "both":  # text now, no interactions yet: a zero part
            # as wide as the interaction factors the RQ-VAE was trained with beside the text
            collab = int(self.rq.mean.shape[0]) - emb.shape[1]
            if collab < 0:
                raise ValueError(
                    f"the codes read {int(self.rq.mean.shape[0])} dimensions (text and "
                    f"interaction factors); these embeddings have {emb.shape[1]}"
                )
            emb = F.normalize(emb, dim=1)
            emb = torch.cat([emb, torch.zeros(len(emb), collab)], 1) / 2**0.5
        if getattr(self, "text_vectors", None) is not None:
            text = F.normalize(torch.as_tensor(np.asarray(embeddings)).float(), dim=1)
            self.text_vectors = torch.cat([self.text_vectors, text.half()])
        raw = self.rq.encode(emb).numpy()
        if getattr(self, "latent", None) is not None:
            self.latent = torch.cat([self.latent, F.normalize(self.rq.latent(emb), dim=1)])
        existing: dict[tuple, int] = {}
        for row in self.codes.cpu().numpy():
            key = tuple(row[:-1])
            existing[key] = max(existing.get(key, 0), int(row[-1]) + 1)
        new = np.zeros((len(raw), raw.shape[1] + 1), dtype=np.int64)
        for n, row in enumerate(raw):
            key = tuple(row)
            new[n, :-1], new[n, -1] = row, existing.get(key, 0)
            existing[key] = new[n, -1] + 1
        first = self.n_items
        self.codes = torch.cat([self.codes, torch.from_numpy(new).to(self.codes.device)])
        self.n_items += len(new)
        self.popularity = np.concatenate([self.popularity, np.zeros(len(new), dtype=np.float32)])
        old_size = self.sizes[-1]
        self._build_index()
        grow = self.sizes[-1] - old_size
        if grow > 0:  # more uniqueness tokens: new rows start at the mean of the trained ones
            table = self.net.tok[-1]
            rows = table.weight.mean(0, keepdim=True).expand(grow, -1)
            bigger = nn.Embedding(self.sizes[-1], table.weight.shape[1]).to(table.weight.device)
            bigger.weight.copy_(torch.cat([table.weight, rows]))
            self.net.tok[-1] = bigger
            self.net.sizes = self.sizes
        self.net.all_codes = self.codes  # the ID head scores new items by their codes
        if self.net.item_emb is not None:  # new items read as their codes alone (zero rows)
            old = self.net.item_emb.weight
            grown = nn.Embedding(self.n_items, old.shape[1]).to(old.device)
            grown.weight.zero_()
            grown.weight[: len(old)] = old
            self.net.item_emb = grown
        return np.arange(first, self.n_items)
