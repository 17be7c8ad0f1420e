"""SASRec family: a decoder-only causal Transformer over item-ID sequences that writes the
next item at every position (Kang & McAuley 2018; loss variants after Klenitskiy & Vasilev
2023 and Petrov & Macdonald 2023).

Three training losses over the same network:
- `ce`: full softmax cross-entropy over all items (`sasrec-ce`, our ID generator);
- `sampled`: softmax over in-batch targets + uniform negatives, logQ-corrected (for
  catalogues too large for a full softmax);
- `bce`: the original recipe, one random negative per position (`sasrec`, a baseline).

Generation: one forward pass over the user's last `max_len` items; the last position's
scores over all items are the recommendation (seen items are masked by `recommend`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Recommender
from directrec.models.training import LoopState, loop_meta, run_epochs


# ----------------------------------------------------------------------------- network
class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.view(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, n, d)
        x = x + F.dropout(self.proj(y), p, self.training)
        return x + self.mlp(self.ln2(x))


class SASRecNet(nn.Module):
    """Item + position embeddings → causal blocks → final norm. Token 0 is padding; item i
    is token i + 1. Sequences are left-padded so the newest item is always last."""

    def __init__(self, n_items: int, max_len: int, dim: int, heads: int, layers: int,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        nn.init.normal_(self.pos.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n = seq.shape[1]
        keep = seq > 0
        # Positions are right-aligned: the newest item is always position max_len - 1,
        # however much left padding a batch has trimmed.
        x = self.item(seq) * math.sqrt(self.dim) + self.pos(
            torch.arange(self.max_len - n, self.max_len)
        )
        x = self.drop(x) * keep.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        # Attend to earlier real items; always to oneself (so no row is fully masked).
        mask = (causal & keep[:, None, :]) | torch.eye(n, dtype=torch.bool)
        mask = mask.unsqueeze(1)  # [B, 1, n, n] broadcast over heads
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over all items (tied input/output embeddings)."""
        return h @ self.item.weight[1:].T


def last_window(data: Interactions, length: int) -> np.ndarray:
    """Each user's last `length` items as tokens (item + 1), left-padded with 0."""
    indptr = data.indptr
    out = np.zeros((data.n_users, length), dtype=np.int64)
    pos_from_end = indptr[data.user + 1] - np.arange(len(data)) - 1
    keep = pos_from_end < length
    out[data.user[keep], length - 1 - pos_from_end[keep]] = data.item[keep] + 1
    return out


# ----------------------------------------------------------------------------- model
class SASRec(Recommender):
    name = "sasrec"
    uses_validation = True  # trains on train, stops early on validation NDCG@10

    @dataclasses.dataclass
    class Config:
        max_len: int = 200
        dim: int = 64
        heads: int = 2
        layers: int = 2
        dropout: float = 0.2
        loss: str = "bce"  # bce | ce | sampled
        negatives: int = 512  # uniform negatives for `sampled`
        epochs: int = 200
        batch_size: int = 128
        lr: float = 1e-3
        weight_decay: float = 0.0
        eval_every: int = 5  # epochs between validations (early stopping)
        patience: int = 4  # validations without improvement before stopping
        max_minutes: float = 0.0  # training-time budget (0 = none); validates, then stops
        bf16: bool = False  # bfloat16 autocast for training
        threads: int = 0  # torch intra-op threads (0 = torch's default)
        checkpoint_dir: str = ""  # where to save progress and resume from
        seed: int = 42
        progress: bool = False

    # -------------------------------------------------------------- history
    def _on_history(self, data: Interactions) -> None:
        self.hist = torch.from_numpy(last_window(data, self.config.max_len))

    def history_of(self, user: int) -> np.ndarray:
        if not 0 <= user < self.n_users:
            return np.zeros(0, dtype=np.int64)
        row = self.hist[user]
        return (row[row > 0] - 1).numpy()

    # -------------------------------------------------------------- training
    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        c = self.config
        if c.loss not in ("bce", "ce", "sampled"):
            raise ValueError("loss must be bce, ce or sampled")
        if c.dim % c.heads:
            raise ValueError("dim must be divisible by heads")
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        self.net = self._build()
        if getattr(self, "_warm_from", None) is not None:
            self._warm_start(self._warm_from)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        windows = torch.from_numpy(last_window(data, c.max_len + 1))
        windows = windows[(windows > 0).sum(1) >= 2]  # need one input and one target
        target_counts = np.bincount(data.item, minlength=self.n_items).astype(np.float64)
        self._log_q_pop = torch.from_numpy(np.log(target_counts / target_counts.sum() + 1e-12))
        state = LoopState()
        if c.checkpoint_dir:
            state = self._resume(opt, data, state)
        validate = None if self.validator is None else (lambda: self.validator(self))
        state = run_epochs(
            self.net,
            lambda epoch: self._epoch(windows, opt, epoch),
            epochs=c.epochs,
            validate=validate,
            eval_every=c.eval_every,
            patience=c.patience,
            max_minutes=c.max_minutes,
            state=state,
            after_epoch=(lambda st: self._checkpoint(opt, data, st)) if c.checkpoint_dir else None,
            desc=self.name,
            progress=c.progress,
        )
        self.meta.update(loop_meta(state))

    def update(self, data: Interactions, catalog: Catalog | None = None, epochs: int = 3) -> SASRec:
        """Fine-tune on `data` (this model's index, extended by new users/items): start from
        these weights, new items' embeddings fresh, and train `epochs` epochs."""
        if data.n_items < self.n_items:
            raise ValueError("an update may add items, not remove them")
        config = dataclasses.replace(self.config, epochs=epochs, checkpoint_dir="", max_minutes=0)
        new = type(self)(config)
        new.meta = dict(self.meta)
        new._warm_from = self.net
        try:
            return new.fit(data, catalog)
        finally:
            new._warm_from = None

    def _warm_start(self, old: SASRecNet) -> None:
        state = old.state_dict()
        with torch.no_grad():
            for name, p in self.net.state_dict().items():
                if name == "item.weight":
                    p[: len(state[name])] = state[name]
                else:
                    p.copy_(state[name])

    def _build(self) -> SASRecNet:
        c = self.config
        return SASRecNet(self.n_items, c.max_len, c.dim, c.heads, c.layers, c.dropout)

    def _epoch(self, windows: torch.Tensor, opt: torch.optim.Optimizer, epoch: int) -> float:
        """One pass over every user's last window; deterministic given (seed, epoch), so a
        resumed run continues exactly where it stopped."""
        c = self.config
        self.net.train()
        torch.manual_seed(c.seed * 100_003 + epoch)
        order = torch.randperm(len(windows))
        total, count = 0.0, 0
        for b in range(0, len(windows), c.batch_size):
            w = windows[order[b : b + c.batch_size]]
            w = w[:, (w > 0).any(0).nonzero().min() :]  # trim all-padding columns
            inp, tgt = w[:, :-1], w[:, 1:]
            mask = (inp > 0) & (tgt > 0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.bf16):
                h = self.net(inp)[mask]
                loss = self._loss(h.float(), tgt[mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * int(mask.sum())
            count += int(mask.sum())
        return total / max(count, 1)

    def _loss(self, h: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """h: hidden states [N, d] at real positions; tgt: their next-item tokens [N]."""
        c, emb = self.config, self.net.item.weight
        if c.loss == "ce":
            return F.cross_entropy(self.net.logits(h), tgt - 1)
        if c.loss == "bce":
            neg = torch.randint(1, self.n_items + 1, tgt.shape)
            pos_l = (h * emb[tgt]).sum(-1)
            neg_l = (h * emb[neg]).sum(-1)
            return F.binary_cross_entropy_with_logits(
                torch.cat([pos_l, neg_l]),
                torch.cat([torch.ones_like(pos_l), torch.zeros_like(neg_l)]),
            )
        # sampled softmax: candidates = batch targets ∪ uniform negatives, logQ-corrected by
        # each candidate's expected count in the sample.
        uniform = torch.randint(0, self.n_items, (c.negatives,))
        cand = torch.unique(torch.cat([tgt - 1, uniform]))
        expected = len(tgt) * self._log_q_pop[cand].exp() + c.negatives / self.n_items
        logits = h @ emb[cand + 1].T - torch.log(expected).float()
        labels = torch.searchsorted(cand, tgt - 1)
        return F.cross_entropy(logits, labels)

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def score(self, users: np.ndarray) -> torch.Tensor:
        seq = self.hist[torch.as_tensor(users)]
        seq = seq[:, (seq > 0).any(0).nonzero().min() :] if (seq > 0).any() else seq[:, -1:]
        return self.net.logits(self.net(seq)[:, -1])

    # -------------------------------------------------------------- checkpoints
    def _checkpoint(self, opt: torch.optim.Optimizer, data: Interactions, state: LoopState) -> None:
        """Write progress to `checkpoint_dir` atomically (safetensors + JSON)."""
        d = Path(self.config.checkpoint_dir)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {f"net.{k}": v.numpy() for k, v in self.net.state_dict().items()}
        tensors |= {f"best.{k}": v.numpy() for k, v in (state.best_weights or {}).items()}
        opt_state = opt.state_dict()
        for idx, st in opt_state["state"].items():
            for name, v in st.items():
                tensors[f"opt.{idx}.{name}"] = (
                    torch.as_tensor(v).numpy().reshape(-1) if v.dim() == 0 else v.numpy()
                )
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "state.safetensors")
        )
        info = {
            "config": self._model_config(),
            "data": data.fingerprint(),
            "epoch": state.epoch, "best": state.best, "best_epoch": state.best_epoch,
            "bad": state.bad, "log": state.log, "param_groups": opt_state["param_groups"],
        }  # fmt: skip
        (tmp / "progress.json").write_text(json.dumps(info))
        old = d.with_name(d.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        shutil.rmtree(old, ignore_errors=True)

    def _model_config(self) -> dict:
        """The settings a checkpoint must match to be resumed (the schedule may change:
        resuming with more epochs continues training)."""
        run_only = ("progress", "checkpoint_dir", "threads", "epochs", "patience", "eval_every",
                    "max_minutes")  # fmt: skip
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k not in run_only}

    def _resume(
        self, opt: torch.optim.Optimizer, data: Interactions, state: LoopState
    ) -> LoopState:
        d = Path(self.config.checkpoint_dir)
        if not (d / "progress.json").exists():
            return state
        info = json.loads((d / "progress.json").read_text())
        if info["config"] != self._model_config() or info["data"] != data.fingerprint():
            raise ValueError(
                f"{d}: checkpoint was made with another config or data; "
                "remove it or choose another --set checkpoint_dir"
            )
        tensors = load_file(str(d / "state.safetensors"))
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("net.")}
        )
        opt_state: dict = {"state": {}, "param_groups": info["param_groups"]}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                t = torch.from_numpy(v)
                opt_state["state"].setdefault(int(idx), {})[name] = (
                    t.reshape(()) if name == "step" else t
                )
        opt.load_state_dict(opt_state)
        best = {k[5:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("best.")}
        return LoopState(best=info["best"], best_epoch=info["best_epoch"], epoch=info["epoch"],
                           bad=info["bad"], log=info["log"], best_weights=best)  # fmt: skip

    # -------------------------------------------------------------- artefacts
    def _state(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.numpy() for k, v in self.net.state_dict().items()}
        lengths = (self.hist > 0).sum(1)
        state["hist.lengths"] = lengths.numpy()
        state["hist.items"] = self.hist[self.hist > 0].numpy()  # row-major: per user, in order
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.net = self._build()
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()
        lengths = torch.from_numpy(state["hist.lengths"])
        hist = torch.zeros((len(lengths), self.config.max_len), dtype=torch.long)
        cols = (
            torch.arange(self.config.max_len)[None, :] >= (self.config.max_len - lengths)[:, None]
        )
        hist[cols] = torch.from_numpy(state["hist.items"])
        self.hist = hist


class SASRecCE(SASRec):
    """SASRec trained with full softmax cross-entropy: directrec's ID generator."""

    name = "sasrec-ce"

    @dataclasses.dataclass
    class Config(SASRec.Config):
        loss: str = "ce"
