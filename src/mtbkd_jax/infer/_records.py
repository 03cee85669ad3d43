"""Typed records of an SG-MCMC run: what it was asked to do, and how long it took."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = ["SGMCMCSettings", "SGMCMCTimings"]


@dataclass(frozen=True)
class SGMCMCSettings:
    """The sampler's settings, as stored with the posterior and in the checkpoint's
    fingerprint (``step_size`` is ``"schedule"`` for a schedule; its values are fingerprinted
    apart)."""

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
            sampler_options=a["sampler_options"],
        )

    @property
    def total_epochs(self) -> int:
        return self.num_burnin_epochs + self.num_epochs

    def as_dict(self) -> dict:
        """Plain values; the cyclical and kernel-specific fields only where they apply."""
        out = asdict(self)
        for name in ("num_cycles", "exploration_fraction"):
            if out[name] is None:
                del out[name]
        if not out["sampler_options"]:
            del out["sampler_options"]
        return out


@dataclass(frozen=True)
class SGMCMCTimings:
    """Wall-clock figures of a run: seconds sampling (warm start excluded), and per jitted
    chunk ``(epochs, seconds)`` (the first includes compilation)."""

    sampling_seconds: float
    steps_per_epoch: int
    chain_devices: int
    chunk_seconds: list

    def as_dict(self) -> dict:
        return asdict(self)
