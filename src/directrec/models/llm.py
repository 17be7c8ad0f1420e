"""Language-model backend: a causal LM reads a prompt built from the user's history (item
titles, optionally a free-text request) and writes the next item's title. Decoding is
beam search constrained by a prefix trie over the tokenised titles, so every output is a
real catalogue item the user has not seen; items are ranked by beam log-probability.

- `base_model`: a Hugging Face causal-LM checkpoint (GPT-2, Llama, Qwen …): a local
  directory, or a hub id fetched when online (offline, only the local cache is read). Empty: a tiny GPT-2 is built from a config with a word-level tokenizer over
  the catalogue (random weights, trained fully): for tests and CPU experiments.
- Fine-tuning: LoRA adapters (`peft`) on (prompt → next title) pairs; `epochs = 0` is
  zero-shot. Adapters (and, for the built-in model, all weights) live in the model's
  safetensors file; the base checkpoint is referenced by path, never copied or pickled.
- `rerank(history, candidates)`: score a candidate list (e.g. the ID head's) by the LM's
  likelihood of each title.

Generation settings are explicit (`do_sample=False`, fixed beams, no length penalty):
recent transformers versions may otherwise pick up `do_sample=True` from a checkpoint's
generation config.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Capabilities, Recommender, Validator, beam_width
from directrec.models.candidates import Candidates
from directrec.models.hf import LMConfig, load_base, tiny_lm
from directrec.models.settings import Checks, DecodingConfig, LoopConfig, RunSettings, setting
from directrec.models.training import EpochRun, rank_shares, train_by_epochs

# The beam search's kept step scores per generate call, in floats (512 MB; `generate_for`)
SCORES_PER_CALL = 2**27
PROMPT = "History: {history}. {request}Next:"
SEP = " ; "


# ----------------------------------------------------------------------------- trie
class TitleTrie:
    """Prefix trie over item token sequences (each ending in EOS). `allowed(prefix, seen)`
    lists the tokens that continue `prefix` towards at least one unseen item."""

    def __init__(self, sequences: list[list[int]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.below: list[list[int]] = [[]]  # items under each node
        self.leaf_item: dict[int, int] = {}
        for item, seq in enumerate(sequences):
            node = 0
            self.below[0].append(item)
            for tok in seq:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][tok] = nxt
                    self.children.append({})
                    self.below.append([])
                node = nxt
                self.below[node].append(item)
            if node in self.leaf_item:
                raise ValueError(
                    f"items {self.leaf_item[node]} and {item} have the same title tokens"
                )
            self.leaf_item[node] = item

    def walk(self, prefix: Sequence[int]) -> int:
        node = 0
        for tok in prefix:
            node = self.children[node].get(int(tok), -1)
            if node < 0:
                return -1
        return node

    def allowed(self, prefix: Sequence[int], seen: set[int]) -> list[int]:
        node = self.walk(prefix)
        if node < 0:
            return []
        return [
            t for t, c in self.children[node].items() if any(i not in seen for i in self.below[c])
        ]


def item_texts(
    catalog: Catalog | None, n_items: int, ids: Sequence[str] | None = None
) -> list[str]:
    """One distinct text per item: its title (id if untitled); duplicates get their id."""
    titles = [
        (catalog.titles[i] if catalog is not None else "") or f"item {i}" for i in range(n_items)
    ]
    titles = [" ".join(t.split()) for t in titles]
    counts: dict[str, int] = {}
    for t in titles:
        counts[t] = counts.get(t, 0) + 1
    return [t if counts[t] == 1 else f"{t} #{ids[i] if ids else i}" for i, t in enumerate(titles)]


# ----------------------------------------------------------------------------- model
@dataclasses.dataclass
class LMDecoding(DecodingConfig):
    """How the LM writes titles: a beam over the catalogue's title trie."""

    beam: int = setting(20, "beams kept while writing titles (≥ the k you evaluate)")

    def checks(self) -> Checks:
        return {"beam": (self.beam >= 1, ">= 1")}


class LLMRec(Recommender):
    name = "llm"
    summary = "a causal language model fine-tuned to write the next item's title"
    capabilities = Capabilities(
        early_stopping=True, generator=True, warm_start=True, reads_requests=True
    )

    @dataclasses.dataclass
    class Config(LMConfig, LMDecoding, LoopConfig):
        """The language model (`LMConfig`), decoding (`LMDecoding`) and how it is
        fine-tuned: the prompts here, the epoch loop's settings in `LoopConfig`."""

        part: ClassVar[str] = "training"  # of the settings declared here

        # recompute each block's activations in the backward pass instead of keeping them:
        # a 0.5B model's batch-32 step took about half the memory, 20 % more time (CPU)
        checkpointing: bool = setting(
            False, "recompute activations in the backward pass: less memory, more time"
        )
        # the prompt and the titles are the model's own: training and generation share them
        prompt_items: int = setting(10, "history titles in the prompt (most recent)", part="model")
        max_title_tokens: int = setting(
            32, "most tokens a title may take (trained and generated)", part="model"
        )
        epochs: int = setting(3, "fine-tuning epochs (0 = zero-shot)")
        samples_per_user: int = setting(4, "training prompts drawn per user per epoch")
        batch_size: int = setting(16, "prompts per batch")
        lr: float = setting(5e-4, "AdamW learning rate")
        weight_decay: float = setting(0.01, "AdamW weight decay on the trained weights")
        eval_every: int = 1
        patience: int = 2

        def checks(self) -> Checks:
            return {
                "prompt_items": (self.prompt_items >= 1, ">= 1"),
                "max_title_tokens": (self.max_title_tokens >= 1, ">= 1"),
                "samples_per_user": (self.samples_per_user >= 1, ">= 1"),
            }

    def __init__(
        self, config: LLMRec.Config | None = None, run: RunSettings | None = None, **overrides
    ) -> None:
        super().__init__(config, run, **overrides)
        self._lock = threading.Lock()

    # -------------------------------------------------------------- building
    def _build(self, catalog: Catalog | None, state: dict[str, np.ndarray] | None = None) -> None:
        """Load or build the LM and tokenizer, wrap LoRA, tokenise titles into the trie."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        c = self.config
        if state is not None:
            self.texts = json.loads(bytes(state["texts"]).decode())
        else:
            self.texts = item_texts(catalog, self.n_items, self.meta.get("item_ids"))
        dtype = self._dtype()
        if c.base_model:
            self.tok, self.lm = load_base(
                c.base_model, AutoTokenizer, AutoModelForCausalLM, dtype=dtype
            )
        else:
            tok_json = bytes(state["tokenizer"]).decode() if state is not None else None
            words = [PROMPT.format(history="none", request="Request: ."), SEP, *self.texts]
            self.tok, self.lm = tiny_lm(
                words, c.tiny_dim, c.tiny_layers, c.tiny_heads, c.tiny_dropout, c.seed, tok_json
            )
            if dtype != "auto":
                self.lm.to(dtype)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.eos = self.tok.eos_token_id
        if c.lora:
            from peft import LoraConfig, get_peft_model

            targets = (
                c.lora_targets if c.lora_targets == "all-linear" else c.lora_targets.split(",")
            )
            self.lm = get_peft_model(
                self.lm,
                LoraConfig(
                    r=c.lora_r,
                    lora_alpha=c.lora_alpha,
                    lora_dropout=c.lora_dropout,
                    target_modules=targets,
                    task_type="CAUSAL_LM",
                ),
            )
        if c.checkpointing:
            self.lm.activation_checkpointing_enable({"use_reentrant": False})
        self.lm.to(self.device)
        self._index_titles()

    def _dtype(self) -> torch.dtype | str:
        """The float type the weights load in: `dtype`, with `auto` resolved per device
        (a torch dtype, or "auto" = the checkpoint's own)."""
        types = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        name = self.config.dtype
        if name == "auto":
            return torch.float32 if self.device.type == "cpu" else "auto"
        return types[name]

    def _index_titles(self) -> None:
        """Tokenise every item's title and build the decoding trie over them."""
        c = self.config
        self.title_tokens = [
            [*self._encode(" " + t)[: c.max_title_tokens], self.eos] for t in self.texts
        ]
        self.trie = TitleTrie(self.title_tokens)

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def prompt(self, history: Sequence[int], request: str = "") -> str:
        items = [self.texts[i] for i in history[-self.config.prompt_items :]]
        req = f"Request: {' '.join(request.split())}. " if request else ""
        return PROMPT.format(history=SEP.join(items) if items else "none", request=req)

    # -------------------------------------------------------------- training
    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        torch.manual_seed(self.config.seed)
        self._build(catalog)
        self._train(data, validator)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """The same checkpoint and adapters; new items' titles join the trie."""
        if data.n_items == self.n_items:
            return
        texts = item_texts(catalog, data.n_items, self.meta.get("item_ids"))
        taken = set(self.texts)
        for i in range(self.n_items, data.n_items):
            t = texts[i] if texts[i] not in taken else f"{texts[i]} #{i}"
            self.texts.append(t)
            taken.add(t)
        self._index_titles()

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        """Epochs of (prompt → next title) pairs. Under torchrun every rank takes a share
        of each global batch (DDP averages the adapters' gradients), rank 0 validates and
        all ranks follow its decisions, as for the other generators."""
        c = self.config
        self.lm.train()
        params = [p for p in self.lm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.epochs > 0:
            epoch_fn = lambda e, run: self._epoch(data, opt, e, run)  # noqa: E731
            train_by_epochs(self, self.lm, epoch_fn, validator)
        self.lm.eval()

    def _pairs(self, data: Interactions, epoch: int) -> list[tuple[list[int], int]]:
        """(history, next item) pairs: `samples_per_user` random cut points per user."""
        rng = np.random.default_rng([self.config.seed, epoch])
        indptr, items = data.indptr, data.item
        out = []
        for u in np.flatnonzero(np.diff(indptr) >= 2):
            lo, hi = indptr[u], indptr[u + 1]
            for cut in rng.integers(lo + 1, hi, size=self.config.samples_per_user):
                out.append(
                    (items[max(lo, cut - self.config.prompt_items) : cut].tolist(), int(items[cut]))
                )
        rng.shuffle(out)
        return out

    def _batch(self, pairs: list[tuple[list[int], int]]) -> tuple[torch.Tensor, ...]:
        """Training rows for (history, next item) pairs: see `_rows`."""
        prompts = [self._encode(self.prompt(hist)) for hist, _ in pairs]
        return self._rows(prompts, [self.title_tokens[target] for _, target in pairs])

    def _rows(self, prompts: list[list[int]], titles: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """Left-padded prompt + title rows: token ids, attention mask, positions (counted
        from each row's first real token) and labels on the title tokens only. Left
        padding puts every title at the end, so the LM head runs over the last few
        positions only (`_title_logits`), not over every prompt token: at a 150k-token
        vocabulary those logits would otherwise be most of a step's memory."""
        seqs = [p + t for p, t in zip(prompts, titles, strict=True)]
        n = max(map(len, seqs))
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs])
        att = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs])
        lab = torch.tensor([[-100] * (n - len(t)) + t for t in titles])
        return ids, att, (att.cumsum(1) - 1).clamp(min=0), lab

    @staticmethod
    def _title_logits(
        model: torch.nn.Module,
        ids: torch.Tensor,
        att: torch.Tensor,
        pos: torch.Tensor,
        lab: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float logits at the positions that predict a row's title tokens [B, T, V] and
        the tokens they predict [B, T] (-100 where a shorter title leaves a gap)."""
        keep = int((lab != -100).sum(1).max()) + 1
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=keep)
        return out.logits[:, :-1].float(), lab[:, -(keep - 1) :]

    def _loss(self, model: torch.nn.Module, rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Mean cross-entropy over the rows' title tokens (as the HF causal-LM loss)."""
        logits, target = self._title_logits(model, *(t.to(self.device) for t in rows))
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)

    def _epoch(
        self,
        data: Interactions,
        opt: torch.optim.Optimizer,
        epoch: int,
        run: EpochRun | None = None,
    ) -> float:
        """One pass over this epoch's pairs; with several ranks each batch is split over
        them and the loss scaled so the averaged gradient is the batch's token mean; the
        batches stop when `run.stop()` says the time budget is spent."""
        c = self.config
        run = run or EpochRun.alone(self.lm)
        d = run.d
        torch.manual_seed(c.seed * 100_003 + epoch)
        self.lm.train()
        pairs = self._pairs(data, epoch)
        total, count = 0.0, 0
        for _, share in rank_shares(pairs, c.batch_size, run):
            rows = self._batch(share)
            n = int((rows[-1] != -100).sum())  # the tokens this rank's loss averages over
            loss = self._loss(run.module, rows)
            opt.zero_grad(set_to_none=True)
            (loss * (n * d.world / max(d.total(n), 1))).backward()
            opt.step()
            total += float(loss.detach()) * len(rows[0])
            count += len(rows[0])
        self.lm.eval()
        return d.total(total) / max(d.total(count), 1)

    def loss_on(self, data: Interactions, epoch: int = 0) -> float:
        """Mean title loss on `data`'s (history, next item) pairs (no training)."""
        with torch.no_grad():
            return float(self._loss(self.lm, self._batch(self._pairs(data, epoch))))

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_for(
        self,
        histories: Sequence[Sequence[int]],
        beam: int,
        exclude: Sequence[set[int]] | None = None,
        request: str = "",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Constrained beam search: items [B, beam] (-1 where fewer exist) and their title
        log-probabilities, best first. Every item is real and outside `exclude[b]`."""
        exclude = exclude or [set(map(int, h)) for h in histories]
        items = np.full((len(histories), beam), -1, dtype=np.int64)
        vals = np.full((len(histories), beam), -np.inf, dtype=np.float32)
        search = []
        for b, (h, ex) in enumerate(zip(histories, exclude, strict=True)):
            left = np.setdiff1d(
                np.arange(self.n_items), np.fromiter(ex, dtype=np.int64, count=len(ex))
            )
            if len(left) <= 2 * beam:  # few items left: score them all exactly
                lp = self.rerank(h, left, request) if len(left) else np.zeros(0, dtype=np.float32)
                top = np.argsort(-lp, kind="stable")[:beam]
                items[b, : len(top)], vals[b, : len(top)] = left[top], lp[top]
            else:
                search.append(b)
        # HF's beam search keeps every step's scores over the vocabulary for every beam
        # (2 × beam of them a user): a call takes as many users as keeps those near
        # SCORES_PER_CALL floats (943 users at once took 24 GB on MovieLens-100K)
        steps = max(map(len, self.title_tokens))
        per = max(1, SCORES_PER_CALL // (2 * beam * len(self.tok) * steps))
        for lo in range(0, len(search), per):
            rows = search[lo : lo + per]
            found, scores = self._beam_search(
                [histories[b] for b in rows], beam, [exclude[b] for b in rows], request
            )
            items[rows], vals[rows] = found, scores
        return items, vals

    def _beam_search(
        self,
        histories: Sequence[Sequence[int]],
        beam: int,
        exclude: Sequence[set[int]],
        request: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """HF beam search with the trie as `prefix_allowed_tokens_fn`; twice the beams are
        searched so that `beam` distinct finished titles come back."""
        from transformers import GenerationConfig

        prompts = [self.prompt(list(h), request) for h in histories]
        self.tok.padding_side = "left"
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        width = enc["input_ids"].shape[1]
        wide = 2 * beam

        def allowed(b: int, ids: torch.Tensor) -> list[int]:
            toks = ids[width:].tolist()
            if toks and toks[-1] == self.eos:
                return [self.eos]  # finished beams pad with EOS
            return self.trie.allowed(toks, exclude[b]) or [self.eos]

        gen = GenerationConfig(
            do_sample=False,
            num_beams=wide,
            num_return_sequences=wide,
            length_penalty=0.0,
            early_stopping=True,
            max_new_tokens=max(map(len, self.title_tokens)),
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.eos,
            output_scores=True,
            return_dict_in_generate=True,
        )
        out = self.lm.generate(**enc, generation_config=gen, prefix_allowed_tokens_fn=allowed)
        seqs = out.sequences[:, width:].view(len(histories), wide, -1).cpu()
        scores = out.sequences_scores.view(len(histories), wide).cpu()
        items = np.full((len(histories), beam), -1, dtype=np.int64)
        vals = np.full((len(histories), beam), -np.inf, dtype=np.float32)
        for b in range(len(histories)):
            taken: list[tuple[float, int]] = []
            for j in range(wide):
                toks = seqs[b, j].tolist()
                end = toks.index(self.eos) + 1 if self.eos in toks else len(toks)
                item = self.trie.leaf_item.get(self.trie.walk(toks[:end]), -1)
                score = float(scores[b, j])
                if (
                    item >= 0
                    and item not in exclude[b]
                    and score > -1e8
                    and item not in {i for _, i in taken}
                ):
                    taken.append((score, item))  # (HF pads missing hypotheses with -1e9)
            taken.sort(key=lambda t: -t[0])
            for j, (score, item) in enumerate(taken[:beam]):
                items[b, j], vals[b, j] = item, score
        return items, vals

    def _top(
        self, histories: Histories, k: int, requests: Sequence[str] | None = None
    ) -> Candidates:
        """The generated items with their title log-probabilities. Rows with a request get
        it in their prompt (rows sharing a request decode together)."""
        hists = [histories[r] for r in range(len(histories))]
        seen = [set(h.tolist()) for h in hists]
        beam = beam_width(self.config.beam, k, self.n_items)
        reqs = list(requests) if requests is not None else [""] * len(hists)
        items = np.full((len(hists), beam), -1, dtype=np.int64)
        logp = np.full((len(hists), beam), -np.inf, dtype=np.float32)
        for request in dict.fromkeys(reqs):
            rows = [b for b, r in enumerate(reqs) if r == request]
            with self._lock:  # HF tokenizers are not safe to call from two threads at once
                items[rows], logp[rows] = self.generate_for(
                    [hists[b] for b in rows], beam, [seen[b] for b in rows], request
                )
        return Candidates.of(torch.from_numpy(items), torch.from_numpy(logp))

    @torch.no_grad()
    def rerank(
        self, history: Sequence[int], candidates: Sequence[int], request: str = ""
    ) -> np.ndarray:
        """Log-likelihood of each candidate's title after the prompt (higher = better),
        in chunks of `batch_size` candidates."""
        p = self._encode(self.prompt(list(history), request))
        out = np.zeros(len(candidates), dtype=np.float32)
        step = max(self.config.batch_size, 1)
        for lo in range(0, len(candidates), step):
            titles = [self.title_tokens[i] for i in candidates[lo : lo + step]]
            rows = self._rows([p] * len(titles), titles)
            logits, target = self._title_logits(self.lm, *(t.to(self.device) for t in rows))
            logp = F.log_softmax(logits, -1).gather(2, target.clamp(min=0)[..., None])[..., 0]
            out[lo : lo + len(titles)] = (logp * (target != -100)).sum(1).cpu().numpy()
        return out

    # -------------------------------------------------------------- artefacts
    def _state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {
            "texts": np.frombuffer(json.dumps(self.texts).encode(), dtype=np.uint8).copy(),
        }
        if self.config.lora:
            from peft import get_peft_model_state_dict

            lora = get_peft_model_state_dict(self.lm)
            state |= {f"lora.{k}": _numpy(v) for k, v in lora.items()}
        base = self.lm.get_base_model() if self.config.lora else self.lm
        if not self.config.base_model:  # built-in: its (trained) weights and tokenizer
            state |= {
                f"base.{k}": _numpy(v) for k, v in base.state_dict().items() if "lora_" not in k
            }
            tok_json = self.tok.backend_tokenizer.to_str()
            state["tokenizer"] = np.frombuffer(tok_json.encode(), dtype=np.uint8).copy()
        elif not self.config.lora:
            raise ValueError("saving a fully fine-tuned checkpoint is not supported: use lora")
        return state

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        c = self.config
        text = {"texts": ((None,), ("uint8",))}
        if not c.base_model:
            text["tokenizer"] = ((None,), ("uint8",))
        self._expect({k: v for k, v in state.items() if "." not in k}, text)
        self._build(None, state)
        if len(self.texts) != self.n_items:
            raise ValueError(f"model.texts: {len(self.texts)} titles for {self.n_items} items")
        expected: dict[str, tuple] = {}
        if not c.base_model:  # the built-in LM's own weights, as `_state` saved them
            base = self.lm.get_base_model() if c.lora else self.lm
            own = {k: v for k, v in base.state_dict().items() if "lora_" not in k}
            expected |= {f"base.{k}": _spec(v) for k, v in own.items()}
        if c.lora:
            from peft import get_peft_model_state_dict

            expected |= {
                f"lora.{k}": _spec(v) for k, v in get_peft_model_state_dict(self.lm).items()
            }
        self._expect({k: v for k, v in state.items() if "." in k}, expected)
        if not c.base_model:
            weights = {
                k[5:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("base.")
            }
            base.load_state_dict(weights, strict=False)
        if c.lora:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(
                self.lm,
                {k[5:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("lora.")},
            )
        self.lm.eval()


def _spec(t: torch.Tensor) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """A saved tensor's expected shape and dtypes: `_numpy` keeps a float tensor's own type
    (bfloat16 as float32), so float32 is accepted for any float weight."""
    own = str(t.dtype).removeprefix("torch.")
    shape = tuple(t.shape) or (1,)  # a 0-d tensor is written as shape (1,)
    if t.is_floating_point():
        return shape, tuple(sorted({"float32", own} - {"bfloat16"}))
    return shape, (own,)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor for the safetensors file; bfloat16 (which numpy lacks) is stored as float32
    and converted back when the weights load."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
