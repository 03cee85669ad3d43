"""Typed records of an SG-MCMC run: what it was asked to do, how long it took, and the step
size chosen by pilot runs (:mod:`mtbkd_jax.infer.step_size`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = [
    "SGMCMCSettings",
    "SGMCMCTimings",
    "StepSizeCheck",
    "StepSizeChoice",
    "UnstableStepSizes",
]


@dataclass(frozen=True)
class SGMCMCSettings:
    """The sampler's settings, as stored with the posterior and in the checkpoint's
    fingerprint (``step_size`` is ``"schedule"`` for a schedule; its values are fingerprinted
    apart; with ``step_size="auto"`` it is the chosen value, ``step_size_choice`` the
    evidence)."""

    sampler: str
    plates: list
    batch_size: int
    num_epochs: int
    num_burnin_epochs: int
    num_chains: int
    warm_start_epochs: int
    draws_per_epoch: int
    random_draw_positions: bool
    partial_last_batch: bool
    step_size: float | str
    temperature: float
    friction: float
    keep_draws: bool
    num_cycles: int | None = None
    exploration_fraction: float | None = None
    sampler_options: dict = field(default_factory=dict)
    step_size_choice: dict | None = None  # step_size="auto": StepSizeChoice.as_dict()
    end_temperature_ratio: float | None = None  # T / tau at the chains' last states

    @classmethod
    def from_arguments(cls, arguments: dict, plates: Sequence[PlateSpec]) -> SGMCMCSettings:
        """From ``run_sgmcmc``'s checked arguments and the model's subsampled plates."""
        a = arguments
        cyclical = a["sampler"] == "cyclical_sgld"
        return cls(
            sampler=a["sampler"],
            plates=[[p.name, p.size, p.batch_size] for p in plates],
            batch_size=plates[0].batch_size,
            num_epochs=int(a["num_epochs"]),
            num_burnin_epochs=int(a["num_burnin_epochs"]),
            num_chains=int(a["num_chains"]),
            warm_start_epochs=int(a["warm_start_epochs"]),
            draws_per_epoch=int(a["draws_per_epoch"]),
            random_draw_positions=a["random_draw_positions"],
            partial_last_batch=a["partial_last_batch"],
            step_size="schedule" if callable(a["step_size"]) else a["step_size"],
            temperature=a["temperature"],
            friction=a["friction"],
            keep_draws=a["keep_draws"],
            num_cycles=int(a["num_cycles"]) if cyclical else None,
            exploration_fraction=a["exploration_fraction"] if cyclical else None,
            sampler_options=_adaptation(a, plates),
        )

    @property
    def total_epochs(self) -> int:
        return self.num_burnin_epochs + self.num_epochs

    def as_dict(self) -> dict:
        """Plain values; the cyclical and kernel-specific fields only where they apply."""
        out = asdict(self)
        for name in ("num_cycles", "exploration_fraction", "step_size_choice",
                     "end_temperature_ratio"):  # fmt: skip
            if out[name] is None:
                del out[name]
        if not out["sampler_options"]:
            del out["sampler_options"]
        return out


def _adaptation(arguments: dict, plates: Sequence[PlateSpec]) -> dict:
    """``sampler_options``, pSGLD's with ``adapt_steps`` (unless given): the burn-in's steps,
    or one epoch's without burn-in, so that the kept draws have a fixed preconditioner
    (:mod:`~mtbkd_jax.infer.psgld`: one that follows the chain samples another density)."""
    options = dict(arguments["sampler_options"])
    if arguments["sampler"] != "psgld" or "adapt_steps" in options:
        return options
    size, batch = plates[0].size, plates[0].batch_size  # as MinibatchPlan.steps_per_epoch
    steps_per_epoch = -(-size // batch) if arguments["partial_last_batch"] else size // batch
    burnin = int(arguments["num_burnin_epochs"]) * steps_per_epoch
    return {**options, "adapt_steps": burnin or steps_per_epoch}


@dataclass(frozen=True)
class SGMCMCTimings:
    """Wall-clock figures of a run: seconds sampling (warm start excluded), and per jitted
    chunk ``(epochs, seconds)`` (the first includes compilation); the devices along the
    chains and (with a mesh) along the data; for a streamed run, per chunk the seconds the
    host spent reading its rows and putting them on the device (on the prefetch thread,
    while the previous chunk ran)."""

    sampling_seconds: float
    steps_per_epoch: int
    chain_devices: int
    chunk_seconds: list
    data_devices: int = 1  # a mesh's "data" axis: devices that split each minibatch
    chunk_read_seconds: list = field(default_factory=list)  # streamed runs only

    def as_dict(self) -> dict:
        return asdict(self)


class UnstableStepSizes(ValueError):
    """Every candidate step size's pilot was judged unstable
    (:func:`~mtbkd_jax.infer.choose_step_size`); the message gives each pilot's reason."""


@dataclass(frozen=True)
class StepSizeCheck:
    """One pilot's verdict (the diagnostic: :mod:`mtbkd_jax.infer.step_size`).

    Attributes:
        step_size: the step size piloted.
        stable: the verdict; ``reason`` says why not (empty when stable).
        temperature_ratio: ``T / tau`` over the pilot's second half (1 on the target; NaN
            when not finite or the curvature estimate is not positive).
        divergence: the worst chain's potential rise over its allowance (above 1: diverging).
        noise_ratio: ``h tr Cov(g) / (2 tau d)`` over the pilot's second half: the variance a
            step's minibatch gradient noise adds per coordinate against the ``2 h tau`` SGLD
            injects (NaN when not measured).
    """

    step_size: float
    stable: bool
    reason: str
    temperature_ratio: float
    divergence: float
    noise_ratio: float = math.nan


@dataclass(frozen=True)
class StepSizeChoice:
    """What :func:`~mtbkd_jax.infer.choose_step_size` chose, and on what evidence.

    Attributes:
        step_size: the choice, ``margin * largest_stable``.
        largest_stable: the largest rung whose pilot was judged stable.
        margin: the safety factor.
        sampler: the sampler piloted.
        candidates: the ladder, largest first.
        checks: the pilots run, in the order run (:attr:`unstable`: those refused, and why).
    """

    step_size: float
    largest_stable: float
    margin: float
    sampler: str
    candidates: tuple[float, ...]
    checks: tuple[StepSizeCheck, ...]

    @property
    def unstable(self) -> tuple[StepSizeCheck, ...]:
        return tuple(c for c in self.checks if not c.stable)

    @property
    def noise_ratio(self) -> float:
        """The minibatch noise's ``noise_ratio`` at the chosen step: the largest stable
        pilot's, times ``margin`` (it is linear in the step at a given spread of the chains)."""
        stable = [c for c in self.checks if c.step_size == self.largest_stable]
        return self.margin * stable[0].noise_ratio if stable else math.nan

    def as_dict(self) -> dict:
        """Plain values (as stored in a posterior's settings), ``noise_ratio`` included."""
        return {**asdict(self), "noise_ratio": self.noise_ratio}
