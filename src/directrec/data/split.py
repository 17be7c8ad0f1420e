"""Evaluation splits: leave-one-out and global temporal.

Leave-one-out: per user, in chronological order (ties broken by ingest order), the last
interaction is the test target, the second-to-last the validation target, the rest is
training. Users with fewer than 3 interactions are kept whole in training and not
evaluated. For the test stage a model is fit on train + validation and ranks with that
history; for the validation stage it is fit on train alone (the SASRec/BERT4Rec protocol).

Temporal: one global time cut. Interactions up to the `1 - valid - test` quantile of time
train, the next `valid` share validates, the last `test` share tests. Targets are a user's
items after the cut; users with no history before it are not evaluated (cold users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from directrec.data.dataset import Interactions


@dataclass
class Targets:
    """Held-out items per evaluated user: users[j]'s items are items[indptr[j]:indptr[j+1]]."""

    users: np.ndarray
    indptr: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_interactions(cls, held: Interactions, eligible: np.ndarray | None = None) -> Targets:
        """Group held-out rows by user (deduplicated, first occurrence order)."""
        keep = np.ones(len(held), bool) if eligible is None else eligible[held.user]
        users, items = held.user[keep], held.item[keep]
        pairs = np.unique(np.stack([users, items], 1), axis=0, return_index=True)[1]
        pairs = np.sort(pairs)
        users, items = users[pairs], items[pairs]
        order = np.argsort(users, kind="stable")
        users, items = users[order], items[order]
        uniq, counts = np.unique(users, return_counts=True)
        return cls(uniq, np.concatenate([[0], np.cumsum(counts)]), items)


@dataclass
class Split:
    """A split of one dataset; `stage(...)` gives what to fit on and what to predict."""

    kind: str
    train: Interactions
    valid: Interactions
    test: Interactions
    valid_targets: Targets
    test_targets: Targets

    def stage(
        self, name: str, max_history: int | None = None, cap_training: bool = False
    ) -> tuple[Interactions, Interactions, Targets]:
        """(fit data, seen items to exclude, targets) for stage `valid` or `test`.

        `max_history` caps what a model reads as a user's context (see `inputs`); the fit
        data keeps every interaction before the targets, as TIGER-style implementations
        do, unless `cap_training` (the old rule: the fit data is capped too). Seen-item
        exclusion always uses the full history."""
        full, targets = self._before(name)
        return (full.last_n(max_history) if cap_training else full), full, targets

    def inputs(self, name: str, max_history: int | None = None) -> Interactions:
        """What models read as each user's history when scoring stage `name`: everything
        before the targets, capped at each user's `max_history` most recent items."""
        return self._before(name)[0].last_n(max_history)

    def _before(self, name: str) -> tuple[Interactions, Targets]:
        if name == "valid":
            full, targets = self.train, self.valid_targets
        elif name == "test":
            full, targets = Interactions.concat(self.train, self.valid), self.test_targets
        else:
            raise ValueError(f"stage must be 'valid' or 'test', not {name!r}")
        return full, targets


def leave_one_out(data: Interactions, min_length: int = 3) -> Split:
    """Last item test, second-to-last validation, rest train (see module doc)."""
    indptr = data.indptr
    length = np.diff(indptr)[data.user]
    pos = np.arange(len(data)) - indptr[data.user]
    eligible = length >= min_length
    test = eligible & (pos == length - 1)
    valid = eligible & (pos == length - 2)
    train = ~(test | valid)
    tr, va, te = data.select(train), data.select(valid), data.select(test)
    return Split("loo", tr, va, te, Targets.from_interactions(va), Targets.from_interactions(te))


def temporal(data: Interactions, valid: float = 0.1, test: float = 0.1) -> Split:
    """Global time cut (see module doc). Needs timestamps."""
    if data.timestamp is None:
        raise ValueError(
            "a temporal split needs timestamps; this data has only an order (use --split loo)"
        )
    if not (0 < valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ValueError("valid and test must be fractions with valid + test < 1")
    t_valid, t_test = np.quantile(data.timestamp, [1 - valid - test, 1 - test])
    tr_mask = data.timestamp <= t_valid
    va_mask = (data.timestamp > t_valid) & (data.timestamp <= t_test)
    te_mask = data.timestamp > t_test
    tr, va, te = data.select(tr_mask), data.select(va_mask), data.select(te_mask)
    has_train = np.bincount(tr.user, minlength=data.n_users) > 0
    has_train_or_valid = has_train | (np.bincount(va.user, minlength=data.n_users) > 0)
    return Split(
        "temporal",
        tr,
        va,
        te,
        Targets.from_interactions(va, has_train),
        Targets.from_interactions(te, has_train_or_valid),
    )


def make_split(data: Interactions, kind: str) -> Split:
    if kind == "loo":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal(data)
    raise ValueError(f"unknown split {kind!r}; choose loo or temporal")
