"""What a streamed run's step sees (:mod:`mtbkd_jax.infer.streaming`): the handler that gives
each subsampled plate the rows of its minibatch, :class:`StreamedPlates`, and the minibatch log
density of a model whose minibatch is its gathered rows, :class:`StreamedEstimator`."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
from numpyro.primitives import _PYRO_STACK, Messenger, plate

from mtbkd_jax.infer.gradients import GradientEstimator, _Static

if TYPE_CHECKING:
    from mtbkd_jax.infer._host_rows import HostRows
    from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = ["StreamedPlates", "StreamedEstimator"]


class StreamedPlates(Messenger):
    """Run a model on one minibatch's gathered rows with the full data's plate scaling.

    Every plate in ``plates`` gets the indices ``0 .. |B| - 1``. A plate the model declares
    with size ``N`` is scaled by NumPyro (``N / |B|``); one it declares with size ``|B|`` (its
    data's length) has its sample sites scaled by ``N / |B|`` here. Any other size is refused.
    """

    def __init__(self, fn: Callable | None, plates: tuple[PlateSpec, ...]) -> None:
        self.plates = {p.name: p for p in plates}
        self.factors: dict[str, float] = {}
        super().__init__(fn)

    def process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "plate" and msg["name"] in self.plates:
            plate = self.plates[msg["name"]]
            declared = int(msg["args"][0])
            msg["value"] = jnp.arange(plate.batch_size)
            if declared == plate.size:
                self.factors.pop(plate.name, None)  # NumPyro scales by N / |B|
            elif declared == plate.batch_size:
                self.factors[plate.name] = plate.size / plate.batch_size
            else:
                raise ValueError(
                    f"streamed: the model declares plate {plate.name!r} with size {declared}, "
                    f"but the streamed minibatch has {plate.batch_size} rows of {plate.size}; "
                    f"declare it with the data's length or with {plate.size}"
                )
        elif msg["type"] == "sample":
            for frame in msg["cond_indep_stack"]:
                factor = self.factors.get(frame.name)
                if factor is not None:
                    msg["scale"] = (1.0 if msg["scale"] is None else msg["scale"]) * factor

    def postprocess_message(self, msg: dict[str, Any]) -> None:
        """``numpyro.subsample(x, event_dim)`` under a streamed plate declared with ``N``: ``x``
        already holds the minibatch's ``|B|`` rows (what the plate would take from ``N``), so
        the enclosing plates, which would look for ``N`` rows, are told to leave it as it is.
        An ``x`` (or a ``numpyro.param(..., event_dim)``) that holds all ``N`` rows is
        refused: the plate would take its rows ``0 .. |B| - 1``, not the minibatch's. Runs
        before the model's own plates' ``postprocess_message`` (this handler wraps the
        model)."""
        if msg["type"] not in ("subsample", "param"):
            return
        event_dim = msg["kwargs"].get("event_dim")
        if event_dim is None:
            return
        shape = jnp.shape(msg["value"])
        for frame in _PYRO_STACK:
            spec = self.plates.get(getattr(frame, "name", None))  # type: ignore[arg-type]
            if not isinstance(frame, plate) or spec is None or frame.size != spec.size:
                continue
            dim = frame.dim - event_dim
            if len(shape) < -dim:
                continue
            if msg["type"] == "param" and shape[dim] == spec.size and spec.size > 1:
                raise ValueError(
                    f"streamed: numpyro.param({msg['name']!r}, ..., event_dim={event_dim}) "
                    f"holds all {spec.size} rows of plate {spec.name!r}, and the plate would "
                    f"take rows 0 .. {spec.batch_size - 1} of it instead of the minibatch's; "
                    "pass per-example arrays as the model's arguments (they are streamed), "
                    "or run without stream=True"
                )
            if msg["type"] == "subsample" and shape[dim] == spec.batch_size:
                msg["kwargs"] = {**msg["kwargs"], "event_dim": None}
                return
            if msg["type"] == "subsample" and shape[dim] == spec.size:
                raise ValueError(
                    f"streamed: numpyro.subsample(..., event_dim={event_dim}) got all "
                    f"{spec.size} rows of plate {spec.name!r} (an array the stream does not "
                    f"gather), and the plate would take rows 0 .. {spec.batch_size - 1} of it "
                    "instead of the minibatch's; pass it as one of the model's arguments with "
                    "its rows first (they are streamed), or run without stream=True"
                )


@jax.tree_util.register_pytree_node_class
class StreamedEstimator(GradientEstimator):
    """The minibatch log density of a model whose minibatch is its gathered rows.

    A minibatch is the tuple of every streamed array's rows for one step (the order of
    :attr:`HostRows.streamed`); the estimator holds the resident arrays and, as its
    ``model_args`` / ``model_kwargs``, the first minibatch's rows (rows ``0 .. |B| - 1``:
    what the device-resident estimator's ``first_batch`` indexes), from which the starting
    points are drawn and positions constrained.
    """

    def __init__(
        self,
        model: Callable,
        rows: HostRows,
        first: tuple,
        resident: tuple,
        static: dict,
    ) -> None:
        self.model = model
        self.rows = rows
        self.first = tuple(first)
        self.resident = tuple(resident)
        self.static = dict(static)
        self.plates = rows.plates
        args, arrays = rows.assemble(self.first, self.resident)
        self.model_args = args
        self.model_kwargs = {**arrays, **self.static}
        self.array_keys = frozenset(arrays)

    def tree_flatten(self) -> tuple[tuple, tuple]:
        static = _Static(tuple(sorted(self.static.items())))
        return (self.first, self.resident), (self.model, _WeakRows(self.rows), static)

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> StreamedEstimator:
        model, rows, static = aux
        return cls(model, rows(), children[0], children[1], dict(static.items))

    def _substituted(self, minibatch: dict) -> Callable:
        return StreamedPlates(self.model, self.plates)

    def batch_model(self, minibatch: Any) -> tuple[Callable, tuple, dict]:
        """The model on one minibatch of gathered rows (a tuple)."""
        args, arrays = self.rows.assemble(tuple(minibatch), self.resident)
        return StreamedPlates(self.model, self.plates), args, {**arrays, **self.static}

    def first_batch(self) -> Any:
        return self.first

    def full_batch(self) -> dict:
        raise ValueError("a streamed estimator holds one minibatch, never the full batch")

    def sample_minibatch(self, rng_key: jax.Array) -> dict:
        raise ValueError("a streamed estimator's minibatches are gathered on the host")


class _WeakRows:
    """A streamed run's :class:`HostRows` in the estimator's aux data by weak reference:
    jit's caches keep every compiled call's aux data alive, and with it the host arrays (the
    user's inputs, held until ``jax.clear_caches()`` after the run had ended). Compared, as
    ``HostRows``, by identity."""

    __slots__ = ("_ref",)

    def __init__(self, rows: HostRows) -> None:
        self._ref = weakref.ref(rows)

    def __call__(self) -> HostRows:
        rows = self._ref()
        if rows is None:
            raise RuntimeError("the streamed run this estimator belonged to has ended")
        return rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _WeakRows) and self._ref == other._ref

    def __hash__(self) -> int:
        return hash(self._ref)
