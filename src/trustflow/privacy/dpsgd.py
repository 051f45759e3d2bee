"""DP-SGD (Opacus) for the network candidates in ``privacy.mode: training``: the plan a training
release is recorded under, before a single step is taken.

The plan fixes everything the guarantee depends on (Abadi et al., 2016): the noise multiplier σ
calibrated by the accountant to the requested (ε, δ), the clipping norm C, the Poisson sampling
rate q = 1 / batches per epoch, and the number of steps for the planned epochs. Training then
uses exactly that σ (``NeuralClassifier.fit(dp=plan)``), so the ledger entry written before
training is the guarantee of the model that comes out. Early stopping only takes fewer steps
(a smaller ε, reported as ``epsilon_at_stop``); the ledger keeps the planned ε.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

Accountant = Literal["prv", "rdp"]


class DpSgdPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accountant: Accountant
    epsilon: float  # the guarantee for the planned steps, at delta
    delta: float
    noise_multiplier: float  # σ: the noise's standard deviation over the clipping norm
    max_grad_norm: float  # C: each row's gradient is clipped to this L2 norm
    sample_rate: float  # q: each row is in a batch with this probability (Poisson sampling)
    epochs: int
    steps: int
    rows: int  # training rows the guarantee is about


def batches_per_epoch(rows: int, batch_size: int) -> int:
    """What a PyTorch loader yields per epoch; Opacus samples each row with 1 / this."""
    return max(math.ceil(rows / batch_size), 1)


def plan_dp_sgd(
    *,
    rows: int,
    batch_size: int,
    epochs: int,
    epsilon: float,
    delta: float,
    max_grad_norm: float,
    accountant: Accountant,
) -> DpSgdPlan:
    """The noise multiplier the accountant needs for (ε, δ) over ``epochs`` epochs of Poisson
    sampled batches of ``batch_size`` expected rows out of ``rows``."""
    from opacus.accountants.utils import get_noise_multiplier

    if not 0 < delta < 1 / rows:
        raise ValueError(
            f"privacy.training.delta = {delta:g} must be below 1/n = {1 / rows:.3g} for "
            f"n = {rows:,} training rows (a larger δ lets a mechanism publish whole rows)"
        )
    batches = batches_per_epoch(rows, batch_size)
    sample_rate = 1 / batches
    sigma = get_noise_multiplier(
        target_epsilon=epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        epochs=epochs,
        accountant=accountant,
    )
    return DpSgdPlan(
        accountant=accountant,
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=float(sigma),
        max_grad_norm=max_grad_norm,
        sample_rate=sample_rate,
        epochs=epochs,
        steps=epochs * batches,
        rows=rows,
    )


def spent_epsilon(plan: DpSgdPlan, steps: int) -> float:
    """The accountant's ε after ``steps`` of the plan's mechanism (fewer after early stopping)."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(plan.accountant)
    accountant.history = [(plan.noise_multiplier, plan.sample_rate, steps)]
    return float(accountant.get_epsilon(delta=plan.delta))


def training_statement(
    plans: dict[str, DpSgdPlan], preprocessing_epsilon: float, epsilon: float, delta: float
) -> str:
    """What the released model guarantees, in one paragraph (model card and ``--json``)."""
    first = next(iter(plans.values()))
    each = "; ".join(
        f"{name}: σ = {p.noise_multiplier:.4g}, q = {p.sample_rate:.4g}, {p.steps:,} steps"
        for name, p in plans.items()
    )
    return (
        f"The model is ({epsilon:g}, {delta:.3g})-DP with respect to the {first.rows:,} "
        f"training rows: the DP preprocessing release (ε = {preprocessing_epsilon:g}) and "
        f"{len(plans)} DP-SGD candidate(s) at ε = {first.epsilon:g}, δ = {first.delta:g} each, "
        "added up by basic composition (the best is chosen among them). DP-SGD: Opacus, "
        f"{first.accountant.upper()} accountant, clipping norm C = {first.max_grad_norm:g}, "
        f"Poisson sampling ({each}). The validation and test rows, which choose the epoch and "
        "the model, are not protected."
    )
