"""An inverted-file (IVF) index over an item table, for the best inner products with a
query state without reading the whole table.

At 10^6 items × 128 dims one exact query reads 512 MB: 35–40 ms on one core, more than
everything else in a semantic-ID call together. The index clusters the items once
(k-means on a sample, then every item to its nearest centroid) into about √n lists and
stores each list's vectors contiguously. A query scores the centroids, then exactly the
items of its best `probe` lists, so it reads about `probe / lists` of the table. Items
in lists it does not probe are missed: the search is approximate, and how much it
misses is the price of `probe`.

The search also estimates the log-normaliser of a softmax over every item (what a
log-softmax needs): exact over the probed items, and for each other list l of n_l items
with mean vector c_l, log n_l + q·c_l. By Jensen's inequality that term is a lower bound
of log Σ_{i∈l} exp(q·x_i), so the estimate is too, and it is close when the lists are
tight or the probed items carry most of the mass."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# k-means trains on this many items per list (faiss warns below 39): enough for stable
# centroids, few enough that building the index at 10^6 items takes seconds.
SAMPLE_PER_LIST = 64
KMEANS_ITERS = 20


@dataclass
class IVFIndex:
    centroids: torch.Tensor  # [L, dim]: each list's mean vector
    items: torch.Tensor  # [n]: item indices, list after list
    vectors: torch.Tensor  # [n, dim]: their vectors in that order (a list is one slice)
    offsets: torch.Tensor  # [L + 1]: list l holds items[offsets[l] : offsets[l + 1]]

    @property
    def n_lists(self) -> int:
        return len(self.centroids)

    @classmethod
    def build(cls, table: torch.Tensor, seed: int, lists: int | None = None) -> IVFIndex:
        """Cluster the rows of `table` [n, dim] into `lists` lists (default round(√n))."""
        from sklearn.cluster import KMeans

        x = table.detach().float().cpu().contiguous()
        n = len(x)
        n_lists = max(1, min(n, lists or round(math.sqrt(n))))
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, min(n, SAMPLE_PER_LIST * n_lists), replace=False)]
        km = KMeans(n_lists, n_init=1, max_iter=KMEANS_ITERS, random_state=seed)
        centroids = torch.from_numpy(km.fit(sample.numpy()).cluster_centers_).float()
        # nearest centroid (L2) in chunks: argmax of x·c - |c|²/2
        half_norm = 0.5 * (centroids * centroids).sum(1)
        assign = torch.cat(
            [(x[i : i + 65536] @ centroids.T - half_norm).argmax(1) for i in range(0, n, 65536)]
        )
        order = torch.argsort(assign, stable=True)
        sizes = torch.bincount(assign, minlength=n_lists)
        # each list's centroid is its members' mean (what the normaliser's bound needs);
        # a list k-means left empty keeps its centroid and holds nothing
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        full = sizes > 0
        centroids[full] = sums[full] / sizes[full].unsqueeze(1).float()
        offsets = torch.zeros(n_lists + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(sizes, 0)
        return cls(centroids, order, x[order].contiguous(), offsets)

    def search(
        self, queries: torch.Tensor, n: int, probe: int, exclude: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each query [B, dim]: its best `n` items by inner product among the items of
        its best `probe` lists, leaving out the row's `exclude` items ([B, n] indices, -1
        where fewer were found, and their inner products, -inf there), and the estimated
        log Σ_i exp(q·x_i) over every item [B] (module doc)."""
        q = queries.detach().float().cpu()
        sizes = (self.offsets[1:] - self.offsets[:-1]).float()
        probe = max(1, min(probe, int((sizes > 0).sum())))
        cent = q @ self.centroids.T  # [B, L]
        # lists k-means left empty are never probed (nor counted: their bound is -inf)
        best = torch.topk(cent.masked_fill(sizes == 0, -torch.inf), probe, dim=1).indices
        # the lists not probed, each bounded by log n_l + q·c_l
        rest = (cent + sizes.log()).scatter(1, best, -torch.inf)
        out_items = torch.full((len(q), n), -1, dtype=torch.long)
        out_scores = torch.full((len(q), n), -torch.inf)
        log_norm = torch.empty(len(q))
        offsets = self.offsets.tolist()
        for r in range(len(q)):
            lists = best[r].tolist()
            ids = torch.cat([self.items[offsets[i] : offsets[i + 1]] for i in lists])
            # a product per list reads each slice in place (a gathered copy costs more)
            scores = torch.cat([self.vectors[offsets[i] : offsets[i + 1]] @ q[r] for i in lists])
            log_norm[r] = torch.logsumexp(torch.cat([scores, rest[r]]), 0)
            if len(exclude[r]):
                scores = scores.masked_fill(
                    torch.isin(ids, torch.from_numpy(exclude[r])), -torch.inf
                )
            top = torch.topk(scores, min(n, len(scores)))
            found = torch.isfinite(top.values)
            m = int(found.sum())
            out_items[r, :m] = ids[top.indices[found]]
            out_scores[r, :m] = top.values[found]
        return out_items, out_scores, log_norm
