"""Differentially private training (DP-SGD, Abadi et al. 2016) through Opacus, with the
user as the privacy unit.

Each step draws users by Poisson sampling (each user in with probability q = batch_size
/ users), takes one training window per drawn user (so a user gives at most one example
to a step), computes each example's gradient (`torch.func.vmap` over the model's
per-example loss: tied embeddings and fused attention, which Opacus's per-layer hooks do
not cover, come out exact), and hands them to Opacus's `DPOptimizer`, which clips each to
`dp_max_grad_norm`, sums them, adds Gaussian noise of `noise multiplier × dp_max_grad_norm`
and steps the wrapped optimizer. The noise multiplier is Opacus's `get_noise_multiplier`
for the target (ε, δ) over the planned steps; an RDP accountant counts the steps taken, so
a run that early stopping or a time budget ends sooner records the smaller ε it spent.

What this bounds is one user's influence on the weights. The artefact's popularity
counts, its id lists, the validation that picks the best epoch, and every list computed
from a user's stored history are outside it (docs/models.md, "Differential privacy")."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

ExampleLoss = Callable[[torch.Tensor], torch.Tensor]  # one example [1, ...] -> scalar loss


@dataclasses.dataclass(frozen=True)
class Budget:
    """The target (ε, δ) and the clipping norm of a private run."""

    epsilon: float
    delta: float
    max_grad_norm: float


def budget_of(config: Any, n_users: int) -> Budget | None:
    """The privacy budget a training config asks for (None: `dp_epsilon` = 0, no DP);
    `dp_delta` = 0 means 1 / the training users."""
    eps = float(getattr(config, "dp_epsilon", 0.0))
    if eps <= 0:
        return None
    if n_users < 2:
        raise ValueError(f"dp_epsilon needs at least 2 training users, not {n_users}")
    delta = float(config.dp_delta) or 1.0 / n_users
    return Budget(eps, delta, float(config.dp_max_grad_norm))


class _PerExample(nn.Module):
    """Calls `loss` on one example with the batch axis restored, so `functional_call` can
    swap the parameters of `net` (which `loss` reads) for the ones being differentiated."""

    def __init__(self, net: nn.Module, loss: ExampleLoss) -> None:
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, example: torch.Tensor) -> torch.Tensor:
        return self.loss(example.unsqueeze(0))


class PrivateSteps:
    """DP-SGD over `n_users` users, one example each per step, for `epochs` epochs of
    `steps_per_epoch` = users / batch_size steps. `history` continues an earlier run's
    accountant (a warm-started update spends on top of its parent's budget)."""

    def __init__(
        self,
        net: nn.Module,
        opt: torch.optim.Optimizer,
        budget: Budget,
        n_users: int,
        batch_size: int,
        epochs: int,
        history: list | None = None,
    ) -> None:
        # Opacus is imported here, not with the module: its import takes seconds
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        self.net, self.budget, self.n_users = net, budget, n_users
        self.sample_rate = min(1.0, batch_size / n_users)
        self.steps_per_epoch = max(1, round(1.0 / self.sample_rate))
        self.accountant = RDPAccountant()
        self.accountant.history = [tuple(h) for h in history or []]
        planned = max(1, epochs * self.steps_per_epoch)
        if self.accountant.history:  # the parent's spending leaves less for this run
            already = epsilon_of(self.accountant, budget.delta)
            if already >= budget.epsilon:
                raise ValueError(
                    f"dp_epsilon {budget.epsilon:g}: the model being updated already spent "
                    f"ε = {already:.3g} (δ = {budget.delta:.3g}); ask for a larger total budget"
                )
        self.noise_multiplier = self._calibrate(planned)
        self.opt = DPOptimizer(
            opt,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=budget.max_grad_norm,
            expected_batch_size=max(1, round(self.sample_rate * n_users)),
            loss_reduction="mean",
        )
        self.opt.attach_step_hook(
            lambda _: self.accountant.step(
                noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate
            )
        )
        self.names = [n for n, p in net.named_parameters() if p.requires_grad]

    def _calibrate(self, steps: int) -> float:
        """The smallest noise multiplier whose `steps` (after any earlier history) stay
        within the target ε at δ (Opacus's binary search over the RDP accountant)."""
        from opacus.accountants.utils import get_noise_multiplier

        b = self.budget
        if not self.accountant.history:
            with warnings.catch_warnings():  # see `epsilon_of`
                warnings.filterwarnings("ignore", message="Optimal order is the")
                return float(
                    get_noise_multiplier(
                        target_epsilon=b.epsilon,
                        target_delta=b.delta,
                        sample_rate=self.sample_rate,
                        steps=steps,
                        accountant="rdp",
                    )
                )
        # With a history the target is the total: search σ for this run's steps on top.
        lo, hi = 0.0, 10.0
        while self._total_epsilon(hi, steps) > b.epsilon:
            lo, hi = hi, 2 * hi
            if hi > 1e6:
                raise ValueError("dp_epsilon: no noise level reaches this budget")
        while hi - lo > 0.01 * hi:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self._total_epsilon(mid, steps) <= b.epsilon else (mid, hi)
        return hi

    def _total_epsilon(self, sigma: float, steps: int) -> float:
        acc = type(self.accountant)()
        acc.history = [*self.accountant.history, (sigma, self.sample_rate, steps)]
        return epsilon_of(acc, self.budget.delta)

    # ------------------------------------------------------------------ one step
    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """Poisson sampling: the indices of the users in this step's batch."""
        inside = torch.rand(self.n_users, generator=generator) < self.sample_rate
        return inside.nonzero().squeeze(1)

    def step(
        self,
        examples: torch.Tensor,
        loss: ExampleLoss,
        chunk: int,
        prepare: Callable[[torch.Tensor], torch.Tensor] = lambda part: part,
    ) -> float:
        """One DP-SGD step over `examples` (one row per drawn user; possibly none): each
        example's gradient, `chunk` examples at a time (each chunk passed through
        `prepare`, e.g. to trim its padding), clipped and summed by Opacus, then one noisy
        update. Returns the mean per-example loss (0 for an empty batch)."""
        by_name = dict(self.net.named_parameters())
        parts = list(examples.split(chunk)) if len(examples) else []
        total = 0.0
        for i, part in enumerate(parts):
            grads, values = per_example_grads(self.net, loss, prepare(part))
            total += float(values.sum())
            for n in self.names:
                by_name[n].grad_sample = grads[n]
            if i < len(parts) - 1:  # clip and accumulate only; the noisy step comes last
                self.opt.signal_skip_step(True)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        if not parts:  # nobody drawn: the step is noise alone, and it is still counted
            for n in self.names:
                p = by_name[n]
                p.grad_sample = p.new_zeros((0, *p.shape))
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return total / max(len(examples), 1)

    # ------------------------------------------------------------------ the record
    def spent(self) -> dict[str, Any]:
        """What the artefact records: the ε spent (at δ) by the steps taken, the noise,
        the clipping norm, the sampling and the accountant's history (which a warm-started
        update continues)."""
        steps = sum(s for _, _, s in self.accountant.history)
        eps = epsilon_of(self.accountant, self.budget.delta) if steps else 0.0
        return {
            "epsilon_spent": round(float(eps), 4),
            "delta": self.budget.delta,
            "epsilon_target": self.budget.epsilon,
            "noise_multiplier": round(self.noise_multiplier, 6),
            "max_grad_norm": self.budget.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": int(steps),
            "users": self.n_users,
            "accountant": "rdp",
            "unit": "user",
            "history": [list(h) for h in self.accountant.history],
        }


def per_example_grads(
    net: nn.Module, loss: ExampleLoss, examples: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each example's gradient of `loss` over `net`'s parameters, by name ([B, *shape]
    each), and each example's loss [B]: `vmap` over examples of the gradient of one."""
    module = _PerExample(net, loss)
    params = {f"net.{n}": p.detach() for n, p in net.named_parameters()}
    per_example = vmap(
        grad_and_value(lambda ps, x: functional_call(module, ps, (x,))),
        in_dims=(None, 0),
        randomness="different",  # each example draws its own dropout
    )
    grads, values = per_example(params, examples)
    return {k.removeprefix("net."): g for k, g in grads.items()}, values


def epsilon_of(accountant: Any, delta: float) -> float:
    """The accountant's ε at `delta`. At a large ε the best RDP order is the smallest
    Opacus tries and it warns that the bound could be tighter; the bound stays valid (it
    only overstates ε), so the warning is not passed on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(accountant.get_epsilon(delta))


def chunk_for(positions: int, n_items: int, n_params: int) -> int:
    """Examples per vmap chunk: their logits (positions × items) and their gradients
    (parameters each) kept near 2^25 floats (128 MB), 1 to 256."""
    return max(1, min(256, 2**25 // max(positions * n_items, n_params, 1)))


def epsilon_text(dp: dict[str, Any]) -> str:
    """One line for people: the spent ε and δ of a private model's meta["dp"]."""
    try:
        return _epsilon_line(dp)
    except (KeyError, TypeError, ValueError):  # a config.json edited by hand
        return f"a record that cannot be read: {dp!r}"


def _epsilon_line(dp: dict[str, Any]) -> str:
    return (
        f"DP-SGD (per user): ε = {dp['epsilon_spent']:g} spent of {dp['epsilon_target']:g}, "
        f"δ = {dp['delta']:.3g}, noise multiplier {dp['noise_multiplier']:g}, "
        f"clipping norm {dp['max_grad_norm']:g}, {dp['steps']} steps at q = "
        f"{dp['sample_rate']:.4g} over {dp['users']} users"
    )
