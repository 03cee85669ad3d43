"""Each epoch's visiting order of every subsampled plate, drawn on the host ahead of the device.

Every epoch visits every example of every plate once, in a fresh uniformly random order
(random reshuffling, as the reference code's ``DataLoader(shuffle=True)``). The orders are
Fisher-Yates shuffles (NumPy's ``Generator.permuted``), drawn in blocks of epochs from a
generator seeded by the chain's key, a purpose tag and the block's index. An epoch's order thus
depends only on (chain key, purpose, epoch): not on how epochs are grouped into chunks, so a
resumed run sees the same minibatches as an uninterrupted one.

**Stratified orders** (``num_strata = D > 1``: data sharded over a mesh's ``data`` axis,
:mod:`mtbkd_jax.infer.stratified`): every plate's N examples are D strata of N / D
consecutive rows, and each stratum ``d`` gets its own uniformly random order of its own rows
per epoch, drawn from a generator seeded by (chain key, purpose, block, D, d). An epoch's order
of a plate is then the D strata's orders side by side: entries ``d N / D .. (d + 1) N / D - 1``
hold a permutation of the *local* row numbers ``0 .. N / D - 1`` of stratum ``d``, so that the
device holding stratum ``d`` reads only its own rows. With ``D = 1`` the orders are exactly the
unstratified ones.

Why on the host: JAX dispatches a chunk asynchronously, so the samplers draw the *next* chunk's
orders here while the device runs the current one, and shuffling costs the chain no time as
long as the host's share of a chunk is the smaller one. On the device the same shuffles are
sorts of random keys; on this project's 2-core CPU they cost about a tenth of a step of the
small digits student (``benchmarks/bench.py``, "epoch shuffles"), more than the rest of the
sampler's overhead over its irreducible work. The host's cost is about 15 ns per index, per
chain and epoch, drawn chain after chain: with many chains of a small model on an accelerator,
where a vectorised step costs about the same for any number of chains, it may no longer hide.
"""

from __future__ import annotations

import jax
import numpy as np

from mtbkd_jax.infer.minibatch import PlateSpec

__all__ = [
    "INDEPENDENT_MINIBATCH_SAMPLERS",
    "EpochOrders",
    "INDEPENDENT_SCHEME",
    "IndependentOrders",
    "ORDERS_SCHEME",
    "SAMPLING",
    "WARM_START",
    "orders_scheme",
    "sampling_orders",
]

# the generator behind the orders (stored in checkpoints: NumPy may change its streams)
ORDERS_SCHEME = f"numpy {np.__version__} PCG64 SeedSequence(key, purpose, block) permuted"
INDEPENDENT_SCHEME = (
    f"numpy {np.__version__} PCG64 SeedSequence(key, purpose, block) integers, independent"
)

# samplers whose minibatches are drawn anew every step (IndependentOrders), not reshuffled
INDEPENDENT_MINIBATCH_SAMPLERS = frozenset({"ncsgld"})
SAMPLING, WARM_START = 0, 1  # purpose tags: the warm start and the sampler draw apart
_BLOCK_INDICES = 1 << 18  # a block holds up to 1 MB of indices per chain (at least one epoch)
_MAX_BLOCK_EPOCHS = 64


def key_words(keys: jax.Array | np.ndarray) -> np.ndarray:
    """The raw uint32 words of a stack of JAX keys (typed or legacy), shape (num_keys, words)."""
    keys = jax.numpy.asarray(keys)
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    if (typed and keys.ndim != 1) or (not typed and keys.ndim != 2):
        raise ValueError(
            "chain_keys must be a stack of keys, one per chain (jax.random.split(key, n)), got "
            f"shape {keys.shape}"
        )
    words = np.asarray(jax.random.key_data(keys) if typed else keys, dtype=np.uint32)
    return words.reshape(words.shape[0], -1)


class EpochOrders:
    """The orders of ``plates`` for every chain, epoch by epoch.

    Args:
        chain_keys: one JAX key per chain (a stacked key array).
        plates: the subsampled plates.
        purpose: a tag that separates streams drawn from the same keys.
        num_strata: D, the strata of every plate (each plate's size divisible by D); 1: one
            order of all N examples.

    ``take(start, stop)`` returns ``{plate name: int32 array (chains, stop - start, N)}``
    (``N``: :meth:`length`).
    Memory: that result, plus at most one cached block (the one a chunk ended inside). A
    sampler holds one chunk's orders on the host (the next chunk's) and one on the device.
    """

    def __init__(
        self,
        chain_keys: jax.Array,
        plates: tuple[PlateSpec, ...],
        purpose: int = SAMPLING,
        num_strata: int = 1,
    ) -> None:
        self.words = key_words(chain_keys)
        self.plates = tuple(plates)
        self.purpose = int(purpose)
        self.num_strata = int(num_strata)
        for plate in self.plates:
            if plate.size % self.num_strata:
                raise ValueError(
                    f"plate {plate.name!r} has {plate.size} examples, which {self.num_strata} "
                    "strata do not divide"
                )
        total = sum(self.length(p) for p in self.plates)
        self.block_epochs = max(1, min(_MAX_BLOCK_EPOCHS, _BLOCK_INDICES // max(total, 1)))
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def num_chains(self) -> int:
        return int(self.words.shape[0])

    def length(self, plate: PlateSpec) -> int:
        """The entries of one epoch's row for ``plate``: its ``N`` examples."""
        return plate.size

    def _generator(self, chain: int, block: int, stratum: int = 0) -> np.random.Generator:
        entropy = [int(w) for w in self.words[chain]] + [self.purpose, block]
        if self.num_strata > 1:
            entropy += [self.num_strata, stratum]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))

    def _draw_block(self, block: int) -> dict[str, np.ndarray]:
        out = {
            p.name: np.empty((self.num_chains, self.block_epochs, p.size), np.int32)
            for p in self.plates
        }
        for chain in range(self.num_chains):
            for stratum in range(self.num_strata):
                generator = self._generator(chain, block, stratum)
                for plate in self.plates:
                    size = plate.size // self.num_strata
                    rows = out[plate.name][chain][:, stratum * size : (stratum + 1) * size]
                    rows[:] = np.arange(size, dtype=np.int32)
                    generator.permuted(rows, axis=1, out=rows)  # in place, row by row
        return out

    def _block(self, block: int) -> dict[str, np.ndarray]:
        if self._cached is not None and self._cached[0] == block:
            return self._cached[1]
        return self._draw_block(block)

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The orders of epochs ``start .. stop - 1``."""
        if not 0 <= start < stop:
            raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
        size = self.block_epochs
        out = {
            p.name: np.empty((self.num_chains, stop - start, self.length(p)), np.int32)
            for p in self.plates
        }
        last = (stop - 1) // size
        for block in range(start // size, last + 1):
            lo, hi = max(start, block * size), min(stop, (block + 1) * size)
            orders = self._block(block)
            for name, rows in orders.items():
                out[name][:, lo - start : hi - start] = rows[
                    :, lo - block * size : hi - block * size
                ]
            if block == last:  # the next chunk starts inside it unless it ended here
                self._cached = None if hi == (block + 1) * size else (block, orders)
            del orders
        return out


class IndependentOrders(EpochOrders):
    """Every step's minibatch drawn anew: ``|B|`` examples uniformly *with* replacement,
    independently of every other step's (each subsampled plate apart).

    The minibatch gradients of successive steps are then independent, each with the noise
    covariance ``V`` of one minibatch. Under :class:`EpochOrders` (random reshuffling) the
    noise of an epoch's steps sums to zero instead, so a chain accumulates less of it than
    one step's ``V`` says. NC-SGLD subtracts ``V`` from the injected noise and needs these
    (:mod:`mtbkd_jax.infer.ncsgld`); with replacement, its half-batch differences estimate
    ``V`` without bias.

    An epoch's row for a subsampled plate holds ``steps_per_epoch * |B|`` indices, step ``s``
    reading entries ``s |B| .. (s + 1) |B| - 1`` (:meth:`PlateSpec.indices` wraps at the row's
    length where it exceeds ``N``): a plate smaller than the first plate's epoch never repeats a
    step's draws within an epoch. A plate taken whole (``|B| = N``) gets a permutation per
    epoch, as in :class:`EpochOrders` (with replacement it would be a bootstrap resample).
    With ``num_strata = D``, stratum ``d``'s ``|B| / D`` entries of every step are drawn from
    its own rows, as local row numbers. Draws depend only on (chain key, purpose, epoch).
    """

    def __init__(
        self,
        chain_keys: jax.Array,
        plates: tuple[PlateSpec, ...],
        steps_per_epoch: int,
        purpose: int = SAMPLING,
        num_strata: int = 1,
    ) -> None:
        self.steps_per_epoch = int(steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        super().__init__(chain_keys, plates, purpose, num_strata)  # blocks sized by length()

    def length(self, plate: PlateSpec) -> int:
        """The entries of one epoch's row for ``plate``."""
        if plate.batch_size == plate.size:
            return plate.size
        return self.steps_per_epoch * plate.batch_size

    def _draw_block(self, block: int) -> dict[str, np.ndarray]:
        out = {
            p.name: np.empty((self.num_chains, self.block_epochs, self.length(p)), np.int32)
            for p in self.plates
        }
        strata = self.num_strata
        for chain in range(self.num_chains):
            for stratum in range(strata):
                generator = self._generator(chain, block, stratum)
                for plate in self.plates:
                    size, width = plate.size // strata, self.length(plate) // strata
                    rows = out[plate.name][chain][:, stratum * width : (stratum + 1) * width]
                    if plate.batch_size == plate.size:
                        rows[:] = np.arange(size, dtype=np.int32)
                        generator.permuted(rows, axis=1, out=rows)
                    else:
                        rows[:] = generator.integers(0, size, rows.shape, dtype=np.int32)
        return out


def orders_scheme(sampler: str) -> str:
    """The minibatch scheme a sampler's draws come from (recorded in a run's fingerprint)."""
    return INDEPENDENT_SCHEME if sampler in INDEPENDENT_MINIBATCH_SAMPLERS else ORDERS_SCHEME


def sampling_orders(
    sampler: str,
    chain_keys: jax.Array,
    plates: tuple[PlateSpec, ...],
    steps_per_epoch: int,
    num_strata: int = 1,
) -> EpochOrders:
    """The sampling stage's minibatches for ``sampler``: independent draws every step for the
    samplers that need them (:data:`INDEPENDENT_MINIBATCH_SAMPLERS`), else epoch reshuffles."""
    if sampler in INDEPENDENT_MINIBATCH_SAMPLERS:
        return IndependentOrders(chain_keys, plates, steps_per_epoch, SAMPLING, num_strata)
    return EpochOrders(chain_keys, plates, SAMPLING, num_strata)
