"""The minibatch orders the samplers draw on the host: permutations, uniform, chunk-free."""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from mtbkd_jax.infer import _orders
from mtbkd_jax.infer._orders import SAMPLING, WARM_START, EpochOrders
from mtbkd_jax.infer.minibatch import PlateSpec

PLATES = (PlateSpec("data", 10, 3), PlateSpec("transfer", 7, 2))


def _keys(n=3, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def test_every_epoch_visits_every_example_once():
    orders = EpochOrders(_keys(), PLATES).take(0, 40)
    for plate in PLATES:
        block = orders[plate.name]
        assert block.shape == (3, 40, plate.size) and block.dtype == np.int32
        np.testing.assert_array_equal(
            np.sort(block, axis=-1), np.broadcast_to(np.arange(plate.size), block.shape)
        )
    # chains and epochs get different orders
    data = orders["data"]
    assert len({tuple(row) for row in data.reshape(-1, 10)}) > 0.95 * data.shape[0] * data.shape[1]


def test_orders_do_not_depend_on_how_epochs_are_grouped(monkeypatch):
    monkeypatch.setattr(_orders, "_MAX_BLOCK_EPOCHS", 4)  # chunks then cross block boundaries
    whole = EpochOrders(_keys(), PLATES).take(0, 23)
    stream = EpochOrders(_keys(), PLATES)
    assert stream.block_epochs == 4
    bounds = [0, 1, 2, 7, 8, 15, 23]
    parts = [stream.take(a, b) for a, b in itertools.pairwise(bounds)]
    for plate in PLATES:
        joined = np.concatenate([p[plate.name] for p in parts], axis=1)
        np.testing.assert_array_equal(joined, whole[plate.name])
    # a fresh stream that starts mid-run (a resumed run) draws the same epochs
    np.testing.assert_array_equal(
        EpochOrders(_keys(), PLATES).take(9, 14)["data"], whole["data"][:, 9:14]
    )


def test_streams_follow_the_keys_and_the_purpose():
    a = EpochOrders(_keys(seed=0), PLATES).take(0, 5)["data"]
    np.testing.assert_array_equal(a, EpochOrders(_keys(seed=0), PLATES).take(0, 5)["data"])
    assert not np.array_equal(a, EpochOrders(_keys(seed=1), PLATES).take(0, 5)["data"])
    warm = EpochOrders(_keys(seed=0), PLATES, WARM_START).take(0, 5)["data"]
    assert not np.array_equal(a, warm)
    # legacy uint32 keys are read the same way as typed keys of the same bits
    legacy = jax.random.key_data(_keys(seed=0))
    np.testing.assert_array_equal(a, EpochOrders(legacy, PLATES, SAMPLING).take(0, 5)["data"])
    with pytest.raises(ValueError, match="start < stop"):
        EpochOrders(_keys(), PLATES).take(3, 3)
    with pytest.raises(ValueError, match="one per chain"):
        EpochOrders(jax.random.key(0), PLATES)  # a single key, not a stack


def test_the_samplers_draws_do_not_depend_on_chunk_epochs(monkeypatch):
    """run_sgmcmc with its warm start gives the same draws for any chunk_epochs, with chunks
    that cross the orders' blocks."""
    import numpyro
    import numpyro.distributions as dist

    import mtbkd_jax as mk

    monkeypatch.setattr(_orders, "_MAX_BLOCK_EPOCHS", 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) > 0).astype(np.int32)

    def model(inputs, labels=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", inputs.shape[0], subsample_size=8) as idx:
            numpyro.sample("y", dist.Bernoulli(logits=inputs[idx] @ w), obs=labels[idx])

    def run(chunk_epochs):
        return mk.run_sgmcmc(
            jax.random.key(3),
            model,
            x,
            y,
            batch_size=8,
            num_epochs=7,
            step_size=1e-3,
            draws_per_epoch=2,
            num_chains=2,
            warm_start_epochs=5,
            chunk_epochs=chunk_epochs,
            progress_bar=False,
        ).draws["w"]

    reference = run(1)
    for chunk_epochs in (3, 7):
        np.testing.assert_array_equal(run(chunk_epochs), reference)


def _uniformity_p_value(orders: np.ndarray, size: int) -> float:
    """Chi-square p-value of the counts of the size! orders (rows of ``orders``)."""
    index = {perm: i for i, perm in enumerate(itertools.permutations(range(size)))}
    counts = np.bincount([index[tuple(row)] for row in orders], minlength=len(index))
    return float(stats.chisquare(counts).pvalue)


def _naive_shuffle(rng, size, epochs):
    """A classic wrong shuffle (swap every position with any position): not uniform."""
    out = np.tile(np.arange(size), (epochs, 1))
    for row in out:
        for i in range(size):
            j = rng.integers(size)
            row[i], row[j] = row[j], row[i]
    return out


def test_orders_are_uniform_over_all_permutations():
    """Every one of the 4! = 24 orders of a 4-example plate is equally likely (chi-square, 23
    degrees of freedom, 12,000 epochs from 3 chains; a wrong shuffle fails the same test)."""
    plate = (PlateSpec("data", 4, 2),)
    orders = EpochOrders(_keys(), plate).take(0, 4000)["data"].reshape(-1, 4)
    assert orders.shape[0] == 12000
    assert len({tuple(row) for row in orders}) == math.factorial(4)  # every order occurs
    assert _uniformity_p_value(orders, 4) > 1e-3
    wrong = _naive_shuffle(np.random.default_rng(0), 4, 12000)
    assert _uniformity_p_value(wrong, 4) < 1e-6
    # consecutive epochs are independent: the pair (first example of epoch e, of epoch e + 1)
    firsts = orders[:, 0].reshape(3, 4000)
    pairs = np.stack([firsts[:, :-1].ravel(), firsts[:, 1:].ravel()])
    table = np.zeros((4, 4))
    np.add.at(table, (pairs[0], pairs[1]), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # and chains are independent: the pair (first example of chain 0, of chain 1) at an epoch
    table = np.zeros((4, 4))
    np.add.at(table, (firsts[0], firsts[1]), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


def _visit_counting_model(num_examples, batch_size):
    """A flat model with one coordinate per example whose minibatch gradient is
    ``N / |B| * 1[j in batch]``: noise-free SGLD (temperature 0) adds ``eta N / |B|`` to the
    coordinate of every example a step visits, so the draws count the visits."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def model(inputs, labels=None):
        z = numpyro.sample("z", dist.ImproperUniform(constraints.real, (), (num_examples,)))
        with numpyro.plate("data", num_examples, subsample_size=batch_size) as idx:
            numpyro.factor("visit", z[idx] + 0.0 * inputs[idx, 0])

    return model


@pytest.mark.parametrize(("num_examples", "batch_size"), [(12, 4), (13, 4)])
@pytest.mark.parametrize("partial_last_batch", [False, True])
def test_the_samplers_batches_visit_every_example_once_per_epoch(
    num_examples, batch_size, partial_last_batch
):
    """Read off the batches ``run_sgmcmc`` really uses (not the orders it draws): within every
    epoch each example is visited at most once, and all N of them when the epoch covers N
    (N divisible by |B|, or the partial last batch); the last batch is scaled by N / (N mod |B|).
    A sampler whose minibatches overlapped within an epoch would give some coordinate an
    increment of 2 eta N / |B| and another 0."""
    import mtbkd_jax as mk

    eta = 0.25
    steps = -(-num_examples // batch_size) if partial_last_batch else num_examples // batch_size
    post = mk.run_sgmcmc(
        jax.random.key(0),
        _visit_counting_model(num_examples, batch_size),
        np.zeros((num_examples, 1), np.float32),
        num_epochs=5,
        step_size=eta,
        temperature=0.0,
        draws_per_epoch=1,
        random_draw_positions=False,  # the kept step is the epoch's last
        num_chains=2,
        init_params={"z": np.zeros(num_examples)},
        partial_last_batch=partial_last_batch,
        progress_bar=False,
    )
    assert post.settings["steps_per_epoch"] == steps
    z = post.draws["z"].astype(np.float64)  # (chains, epochs, N): end of every epoch
    increments = np.diff(np.concatenate([np.zeros_like(z[:, :1]), z], axis=1), axis=1)
    full = eta * num_examples / batch_size
    remainder = num_examples % batch_size
    for chain_epoch in increments.reshape(-1, num_examples):
        visited_full = np.isclose(chain_epoch, full, rtol=1e-6)
        others = chain_epoch[~visited_full]
        if partial_last_batch and remainder:
            # the left-over examples: one smaller batch scaled by N / (N mod |B|)
            assert visited_full.sum() == num_examples - remainder
            np.testing.assert_allclose(others, eta * num_examples / remainder, rtol=1e-6)
        else:
            assert visited_full.sum() == batch_size * (num_examples // batch_size)
            np.testing.assert_array_equal(others, 0.0)  # left out until the next reshuffle


# --- independent minibatches (NC-SGLD) -------------------------------------------------------

INDEPENDENT_PLATES = (PlateSpec("data", 10, 3), PlateSpec("transfer", 7, 4), PlateSpec("all", 5, 5))


def test_independent_orders_draw_every_step_anew_with_replacement():
    """Each step's |B| entries are uniform over the plate, independent of the other steps'
    (pairs of entries within a step and across steps are uniform on N x N; random reshuffling
    never repeats an example within an epoch); a plate taken whole gets a permutation."""
    steps = 3  # data's 10 // 3
    orders = _orders.IndependentOrders(_keys(4), INDEPENDENT_PLATES, steps).take(0, 2000)
    data, transfer, whole = orders["data"], orders["transfer"], orders["all"]
    assert data.shape == (4, 2000, 9) and transfer.shape == (4, 2000, 12)  # steps x |B|
    np.testing.assert_array_equal(np.sort(whole, -1), np.broadcast_to(np.arange(5), whole.shape))
    for block, size in ((data, 10), (transfer, 7)):
        counts = np.bincount(block.ravel(), minlength=size)
        assert counts.size == size and stats.chisquare(counts).pvalue > 1e-3
        # the transfer plate (7 examples, 12 draws an epoch) never wraps onto its own draws
        pairs = block[..., 0] * size + block[..., -1]  # first and last entries of an epoch
        assert stats.chisquare(np.bincount(pairs.ravel(), minlength=size**2)).pvalue > 1e-3
        within = block.reshape(4, 2000, steps, -1)
        repeats = np.mean(within[..., 0] == within[..., 1])  # two draws of one step
        assert abs(repeats - 1 / size) < 4 * np.sqrt(1 / size / within[..., 0].size)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        _orders.IndependentOrders(_keys(), INDEPENDENT_PLATES, 0)


def test_independent_orders_do_not_depend_on_how_epochs_are_grouped(monkeypatch):
    monkeypatch.setattr(_orders, "_MAX_BLOCK_EPOCHS", 4)
    whole = _orders.IndependentOrders(_keys(), INDEPENDENT_PLATES, 3).take(0, 23)
    stream = _orders.IndependentOrders(_keys(), INDEPENDENT_PLATES, 3)
    parts = [stream.take(a, b) for a, b in itertools.pairwise([0, 1, 2, 7, 8, 15, 23])]
    for plate in INDEPENDENT_PLATES:
        joined = np.concatenate([p[plate.name] for p in parts], axis=1)
        np.testing.assert_array_equal(joined, whole[plate.name])
    resumed = _orders.IndependentOrders(_keys(), INDEPENDENT_PLATES, 3).take(9, 14)
    np.testing.assert_array_equal(resumed["data"], whole["data"][:, 9:14])
    # the scheme is recorded: a checkpoint of reshuffled orders is not resumed by NC-SGLD
    assert _orders.orders_scheme("ncsgld") != _orders.orders_scheme("sgld")


def test_independent_orders_in_strata_draw_each_stratum_s_own_rows():
    plates = (PlateSpec("data", 12, 4),)  # D = 2 strata of 6 rows, |B| / D = 2 a step each
    orders = _orders.IndependentOrders(_keys(2), plates, 3, num_strata=2).take(0, 500)["data"]
    assert orders.shape == (2, 500, 12)
    for stratum in (orders[..., :6], orders[..., 6:]):  # local row numbers of each stratum
        counts = np.bincount(stratum.ravel(), minlength=6)
        assert counts.size == 6 and stats.chisquare(counts).pvalue > 1e-3


def test_a_plate_reads_a_step_of_independent_orders_without_wrapping_early():
    """PlateSpec.indices wraps at the order's length: a plate whose epoch of draws is longer
    than its N (here 7 examples, 12 draws) reads each step's own entries."""
    plate = PlateSpec("transfer", 7, 4)
    order = np.arange(12) * 10
    got = [np.asarray(plate.indices(order, step)).tolist() for step in range(3)]
    assert got == [[0, 10, 20, 30], [40, 50, 60, 70], [80, 90, 100, 110]]
    permutation = np.array([3, 1, 4, 0, 6, 2, 5])  # an epoch's permutation still wraps at N
    assert np.asarray(plate.indices(permutation, 1)).tolist() == [6, 2, 5, 3]
