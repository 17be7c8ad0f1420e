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
from directrec.data.histories import Histories
from directrec.models import distributed
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.training import LoopState, train_by_epochs
from directrec.models.transformer import (
    Block,
    Dropout,
    autocast,
    causal_padding_mask,
    full_softmax_ce,
    pack,
    segment_causal_mask,
    trim_padding,
)


# ----------------------------------------------------------------------------- network
class SASRecNet(nn.Module):
    """Item + position embeddings → causal blocks → final norm. Token 0 is padding; item i
    is token i + 1. Sequences are left-padded so the newest item is always last."""

    def __init__(
        self,
        n_items: int,
        max_len: int,
        dim: int,
        heads: int,
        layers: int,
        dropout: float,
        attn_dropout: float | None = None,
        mlp_ratio: int = 4,
        drop_keys: bool = False,
        temperature: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim, self.max_len, self.temperature = dim, max_len, temperature
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, heads, dropout, attn_dropout, mlp_ratio, drop_keys) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        nn.init.normal_(self.pos.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(
        self, seq: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """seq [B, n] tokens (left-padded) → hidden states [B, n, dim]. With `packed` =
        (segments, positions) from `transformer.pack`, a row holds several windows and each
        token attends only within its own."""
        n = seq.shape[1]
        if packed is None:
            keep = seq > 0
            # Positions are right-aligned: the newest item is always position max_len - 1,
            # however much left padding a batch has trimmed.
            pos = torch.arange(self.max_len - n, self.max_len, device=seq.device)
            mask = causal_padding_mask(keep)
        else:
            segments, pos = packed
            keep = segments >= 0
            mask = segment_causal_mask(segments)
        x = self.item(seq) * math.sqrt(self.dim) + self.pos(pos)
        x = self.drop(x) * keep.unsqueeze(-1)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, item rows incl. padding row 0) whose dot products are the scores: tied
        input/output embeddings, or with `temperature` > 0 their cosine / temperature (both
        sides L2-normalised, as HSTU scores items), which caps every logit at 1/temperature."""
        if self.temperature <= 0:
            return h, self.item.weight
        w = F.normalize(self.item.weight, dim=-1)
        return F.normalize(h, dim=-1) / self.temperature, w

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over all items."""
        q, w = self.head(h)
        return q @ w[1:].T


def batches(windows: torch.Tensor, size: int, by_length: bool) -> list[torch.Tensor]:
    """Row indices of each batch of one epoch, drawn from torch's global generator. With
    `by_length`, rows are shuffled, cut into pools of 50 batches, sorted by length within a
    pool, cut into batches, and the batches shuffled: similar lengths share a batch (so
    `trim_padding` removes most padding) while every epoch still mixes users at random."""
    order = torch.randperm(len(windows))
    if by_length:
        lengths = (windows > 0).sum(1).cpu()[order]
        pool = 50 * size
        order = torch.cat(
            [
                order[i : i + pool][torch.argsort(lengths[i : i + pool], stable=True)]
                for i in range(0, len(order), pool)
            ]
        )
    cut = list(order.split(size))
    if by_length:
        cut = [cut[i] for i in torch.randperm(len(cut)).tolist()]
    return [b.to(windows.device) for b in cut]


# ----------------------------------------------------------------------------- model
class SASRec(Recommender):
    name = "sasrec"
    capabilities = Capabilities(early_stopping=True, warm_start=True)

    @dataclasses.dataclass
    class Config:
        # architecture
        max_len: int = 200
        dim: int = 64
        heads: int = 2
        layers: int = 2
        dropout: float = 0.2
        attn_dropout: float = -1.0  # dropout on attention weights; < 0 = the same as dropout
        # Apply attn_dropout as DropKey (query-key pairs masked before the softmax) instead
        # of dropping weights after it: the fused attention kernel then runs it, 2.4× cheaper
        # for the attention on a CPU (bench/epoch_cost.py; transformer.Block)
        drop_keys: bool = False
        mlp_ratio: int = 4  # MLP width / dim (1 = the original SASRec's feed-forward)
        # Score items by cosine / temperature instead of the dot product (0 = dot product);
        # HSTU's ML-1M recipe scores this way at 0.05
        temperature: float = 0.0
        # training
        loss: str = "bce"  # bce | ce | sampled
        negatives: int = 512  # uniform negatives for `sampled`
        epochs: int = 200
        batch_size: int = 128
        # Random batches whose windows are packed side by side into rows (attention stays
        # within each window): random batches' learning at about the compute of their real
        # tokens. The default since it tested better at the same cost per epoch on
        # MovieLens-100K, Amazon Beauty and ML-1M (docs/results/CAVEATS.md, session 15).
        pack: bool = True
        # With pack=false: padding-aware batching (each batch holds windows of similar
        # length, shuffled within 50-batch pools, batches in random order) if true, else
        # plain random batches (a GPU's choice: padding costs little there).
        length_batches: bool = True
        # Which interactions train: last = each user's last max_len + 1 items (the original
        # SASRec's windows) | all = the whole history, tiled into windows of max_len + 1 from
        # the newest back, so every interaction is a target once (`Histories.tiles`); the
        # context still never exceeds max_len. On ML-1M `last` trains on 66 % of them.
        windows: str = "last"
        lr: float = 1e-3
        # none | cosine: a half cosine from `lr` towards 0 over `epochs` | cooldown: `lr`
        # until the last `cooldown` share of `epochs`, then linear steps towards 0 (set
        # `epochs` to what the time budget affords; validation still picks the best epoch)
        lr_decay: str = "none"
        cooldown: float = 0.2
        weight_decay: float = 0.0
        # adam: Adam, `weight_decay` added to the gradient as an L2 term (the original
        # recipe) | adamw: decoupled decay (AdamW, Loshchilov & Hutter 2019) on the weight
        # matrices and embeddings only, never on biases or norms (as GPT is trained)
        optimizer: str = "adam"
        # Validate and keep a moving average of the epochs' end weights (this factor × the
        # previous average + the rest × this epoch's; 0 = off, 0.8 ≈ the last 5 epochs)
        average: float = 0.0
        eval_every: int = 5  # epochs between validations (early stopping)
        patience: int = 4  # validations without improvement before stopping
        # Training-time budget (0 = none); validates, then stops. The default lets a first
        # run on a small set (MovieLens-100K) finish in minutes on a laptop CPU; raise it
        # (or set 0) for a large set or a GPU run to convergence.
        max_minutes: float = 4.0
        bf16: bool = False  # bfloat16 autocast (training; also scoring on CUDA)
        seed: int = 42
        # runtime (never part of what a checkpoint must match)
        device: str = "auto"  # auto | cpu | cuda | cuda:N
        threads: int = 0  # torch intra-op threads (0 = torch's default)
        checkpoint_dir: str = ""  # where to save progress and resume from
        progress: bool = False

    RUNTIME = (
        "device",
        "threads",
        "checkpoint_dir",
        "progress",
        "epochs",
        "patience",
        "eval_every",
        "max_minutes",
    )

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        self.net = self._build().to(self.device)
        self._train(data, validator)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """New items get fresh embedding rows; everything else keeps its weights."""
        if data.n_items == self.n_items:
            return
        old = self.net.state_dict()
        self.n_items = data.n_items
        self.net = self._build().to(self.device)
        with torch.no_grad():
            for name, p in self.net.state_dict().items():
                src = old[name].to(p.device)
                if name == "item.weight":
                    p[: len(src)] = src
                else:
                    p.copy_(src)

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        c = self.config
        if c.loss not in ("bce", "ce", "sampled"):
            raise ValueError("loss must be bce, ce or sampled")
        if c.dim % c.heads:
            raise ValueError("dim must be divisible by heads")
        if c.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = dot product), not {c.temperature}")
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        dev = self.device
        opt = self._optimizer()
        histories = Histories.from_interactions(data)
        windows = torch.from_numpy(histories.training_windows(c.max_len + 1, c.windows))
        windows = windows[(windows > 0).sum(1) >= 2].to(dev)  # need one input and one target
        counts = np.bincount(data.item, minlength=self.n_items).astype(np.float64)
        log_q = torch.from_numpy(np.log(counts / counts.sum() + 1e-12)).float().to(dev)
        state = LoopState()
        if c.checkpoint_dir:
            state = self._resume(opt, data, state)
        # Under torchrun: every rank takes a share of each global batch, gradients are
        # averaged by DDP, rank 0 validates and checkpoints, and all ranks follow its
        # decisions (`agree`), so they stop together with the same weights.
        d = distributed.current()
        trainer = self.net
        if d.active:
            ids = [dev.index] if dev.type == "cuda" else None
            trainer = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        after = (
            (lambda st: self._checkpoint(opt, data, st)) if c.checkpoint_dir and d.main else None
        )
        check = None
        if validator is not None:
            check = validator if d.main else (lambda model: 0.0)  # rank 0 decides
        epoch_fn = lambda epoch: self._epoch(windows, opt, epoch, log_q, trainer, d)  # noqa: E731
        train_by_epochs(
            self, self.net, epoch_fn, check, state=state, after_epoch=after, agree=d.agree, opt=opt
        )
        self.meta["device"] = str(dev)
        if d.active:
            self.meta["processes"] = d.world

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam with L2 in the gradient, or AdamW decaying only the ≥ 2-D parameters."""
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            params = list(self.net.parameters())
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "weight_decay": c.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
            ]
            return torch.optim.AdamW(groups, lr=c.lr)
        raise ValueError(f"optimizer must be adam or adamw, not {c.optimizer!r}")

    def _build(self) -> SASRecNet:
        c = self.config
        attn = None if c.attn_dropout < 0 else c.attn_dropout
        return SASRecNet(
            self.n_items,
            c.max_len,
            c.dim,
            c.heads,
            c.layers,
            c.dropout,
            attn,
            c.mlp_ratio,
            c.drop_keys,
            c.temperature,
        )

    def _epoch(
        self,
        windows: torch.Tensor,
        opt: torch.optim.Optimizer,
        epoch: int,
        log_q: torch.Tensor,
        trainer: nn.Module,
        d: distributed.Dist,
    ) -> float:
        """One pass over the training windows (`windows`); deterministic given (seed, epoch), so a
        resumed run continues exactly where it stopped. With several ranks, each global
        batch of `batch_size` windows is split over them and every rank's loss is scaled
        so the averaged gradient is the global batch's mean (as in one process)."""
        c, dev = self.config, windows.device
        self.net.train()
        torch.manual_seed(c.seed * 100_003 + epoch)
        total = torch.zeros((), device=dev)
        count = 0
        for batch in batches(windows, c.batch_size, c.length_batches and not c.pack):
            if len(batch) < d.world:
                continue  # too small to give every rank a share (all ranks skip it)
            share = windows[batch[d.rank :: d.world]]
            if c.pack:
                w, seg, pos = pack(share)
                mask = (seg[:, :-1] == seg[:, 1:]) & (seg[:, 1:] >= 0)
                packed = (seg[:, :-1], pos[:, :-1])
            else:
                w, packed = trim_padding(share), None
                mask = (w[:, :-1] > 0) & (w[:, 1:] > 0)
            inp, tgt = w[:, :-1], w[:, 1:]
            n = int(mask.sum())
            n_global = d.total(n)
            with autocast(dev, c.bf16):
                h = trainer(inp, packed)[mask]
                loss = self._loss(h.float(), tgt[mask], log_q)
            opt.zero_grad(set_to_none=True)
            (loss * (n * d.world / n_global)).backward()
            opt.step()
            total += loss.detach() * n
            count += n
        return d.total(float(total)) / max(d.total(count), 1)

    def _loss(self, h: torch.Tensor, tgt: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """h: hidden states [N, d] at real positions; tgt: their next-item tokens [N]."""
        c, dev = self.config, h.device
        h, emb = self.net.head(h)
        if c.loss == "ce":
            return full_softmax_ce(h, emb[1:], tgt - 1)
        if c.loss == "bce":
            neg = torch.randint(1, self.n_items + 1, tgt.shape).to(dev)
            pos_l = (h * emb[tgt]).sum(-1)
            neg_l = (h * emb[neg]).sum(-1)
            return F.binary_cross_entropy_with_logits(
                torch.cat([pos_l, neg_l]),
                torch.cat([torch.ones_like(pos_l), torch.zeros_like(neg_l)]),
            )
        # sampled softmax: candidates = batch targets ∪ uniform negatives, logQ-corrected by
        # each candidate's expected count in the sample.
        uniform = torch.randint(0, self.n_items, (c.negatives,)).to(dev)
        cand = torch.unique(torch.cat([tgt - 1, uniform]))
        expected = len(tgt) * log_q[cand].exp() + c.negatives / self.n_items
        logits = h @ emb[cand + 1].T - torch.log(expected).float()
        labels = torch.searchsorted(cand, tgt - 1)
        return F.cross_entropy(logits, labels)

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        """One forward pass over each history's last `max_len` items; the last position's
        scores over all items are the next-item distribution (logits)."""
        dev = self.device
        seq = trim_padding(torch.from_numpy(histories.windows(self.config.max_len)).to(dev))
        with autocast(dev, self.config.bf16 and dev.type == "cuda"):
            return self.net.logits(self.net(seq)[:, -1]).float()

    # -------------------------------------------------------------- checkpoints
    def _checkpoint(self, opt: torch.optim.Optimizer, data: Interactions, state: LoopState) -> None:
        """Write progress to `checkpoint_dir` atomically (safetensors + JSON)."""
        d = Path(self.config.checkpoint_dir)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {f"net.{k}": v.cpu().numpy() for k, v in self.net.state_dict().items()}
        tensors |= {f"best.{k}": v.cpu().numpy() for k, v in (state.best_weights or {}).items()}
        tensors |= {f"avg.{k}": v.cpu().numpy() for k, v in (state.averaged or {}).items()}
        opt_state = opt.state_dict()
        for idx, st in opt_state["state"].items():
            for name, v in st.items():
                tensors[f"opt.{idx}.{name}"] = (
                    torch.as_tensor(v).cpu().numpy().reshape(-1)
                    if v.dim() == 0
                    else v.cpu().numpy()
                )
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "state.safetensors")
        )
        info = {
            "config": self._model_config(),
            "data": data.fingerprint(),
            "epoch": state.epoch,
            "best": state.best,
            "best_epoch": state.best_epoch,
            "bad": state.bad,
            "log": state.log,
            "param_groups": opt_state["param_groups"],
        }
        (tmp / "progress.json").write_text(json.dumps(info))
        old = d.with_name(d.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        shutil.rmtree(old, ignore_errors=True)

    def _model_config(self, config: Config | None = None) -> dict:
        """The settings (of `config`, else this model's) a checkpoint must match to be resumed
        (the schedule may change: resuming with more epochs continues training)."""
        c = self.config if config is None else config
        return {k: v for k, v in dataclasses.asdict(c).items() if k not in self.RUNTIME}

    def _resume(
        self, opt: torch.optim.Optimizer, data: Interactions, state: LoopState
    ) -> LoopState:
        d = Path(self.config.checkpoint_dir)
        if not (d / "progress.json").exists():
            return state
        info = json.loads((d / "progress.json").read_text())
        # a setting added after the checkpoint was written ran at its default there
        made_with = {**self._model_config(self.Config()), **info["config"]}
        if made_with != self._model_config() or info["data"] != data.fingerprint():
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
        avg = {
            k[4:]: torch.from_numpy(v).to(self.device)
            for k, v in tensors.items()
            if k.startswith("avg.")
        }
        return LoopState(
            best=info["best"],
            best_epoch=info["best_epoch"],
            epoch=info["epoch"],
            bad=info["bad"],
            log=info["log"],
            best_weights=best,
            averaged=avg or None,
        )

    # -------------------------------------------------------------- artefacts
    def _state(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.cpu().numpy() for k, v in self.net.state_dict().items()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.net = self._build()
        self._load_module(self.net, state, "net.")
        self._expect({k: v for k, v in state.items() if not k.startswith("net.")}, {})
        self.net.to(self.device).eval()


class SASRecCE(SASRec):
    """SASRec trained with full softmax cross-entropy: directrec's ID generator."""

    name = "sasrec-ce"

    @dataclasses.dataclass
    class Config(SASRec.Config):
        loss: str = "ce"
