"""Typed records of an SG-MCMC run: what it was asked to do, and how long it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
