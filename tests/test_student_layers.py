"""Students with BatchNorm and Dropout: refused in training mode, correct in evaluation mode.

In training mode these layers make an example's logits depend on the other examples in its
batch (BatchNorm's batch statistics) or on one random mask that NumPyro's lifting restores on
every call (Dropout). Nothing failed before: the samplers ran and the predictions changed with
the batch they were made in. The tests show that fault on the lifted network itself, check that
every front-end refuses such a student with a message that says what to do, and check that the
evaluation-mode layers give the module's own function (BatchNorm's running statistics as
fixed constants), which a version ignoring those statistics would fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx
from numpyro import handlers
from numpyro.infer import MCMC

import mtbkd_jax as mk
from mtbkd_jax._layer_state import check_per_example
from mtbkd_jax.infer import SGMCMC

N, F, C = 40, 4, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype(np.float32)
    y = rng.integers(0, C, N)
    bank = mk.TeacherBank.from_logits(rng.normal(size=(2, N, C)), names=["a", "b"])
    return x, y, bank


class NormNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, rate: float = 0.5) -> None:
        self.l1 = nnx.Linear(F, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.l2 = nnx.Linear(8, C, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(x)))))


class BatchCentred(nnx.Module):
    """No state, but normalises over the batch axis."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.l1 = nnx.Linear(F, C, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.l1(x - x.mean(axis=0))


class LinenNormNet(linen.Module):
    train: bool = False
    dropout: bool = False

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = linen.Dense(8)(x)
        x = linen.BatchNorm(use_running_average=not self.train)(x)
        if self.dropout:
            x = linen.Dropout(0.5, deterministic=not self.train)(x)
        return linen.Dense(C)(x)


def _lifted(module: nnx.Module, x: np.ndarray) -> jax.Array:
    """The lifted network's logits with weights drawn from the prior (no checks)."""
    student = mk.Student(module)
    return handlers.seed(student, jax.random.key(1))(jnp.asarray(x))


def test_training_mode_layers_make_an_example_depend_on_its_batch(data):
    """The fault the check exists for, shown on the lifted network without the check."""
    x = data[0]
    batchnorm = NormNet(nnx.Rngs(0), rate=0.0)
    alone, in_batch = _lifted(batchnorm, x[:1]), _lifted(batchnorm, x)
    assert np.max(np.abs(np.asarray(alone[0]) - np.asarray(in_batch[0]))) > 0.1
    dropout = NormNet(nnx.Rngs(0))
    dropout.bn.use_running_average = True
    first, again = _lifted(dropout, x), _lifted(dropout, x)
    np.testing.assert_array_equal(first, again)  # one fixed mask, restored on every call...
    shifted = _lifted(dropout, np.roll(x, 1, axis=0))
    # ...that depends on where an example sits in its batch
    assert np.max(np.abs(np.asarray(shifted[1:]) - np.asarray(first[:-1]))) > 1e-3


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: NormNet(nnx.Rngs(0), rate=0.0), ["bn.mean", "bn.var"]),
        (lambda: _with(NormNet(nnx.Rngs(0)), use_running_average=True), ["drop.rngs"]),
        (lambda: LinenNormNet(train=True), ['"batch_stats" is immutable']),
        (lambda: LinenNormNet(train=True, dropout=True), ['"batch_stats" is immutable']),
    ],
    ids=["nnx-batchnorm", "nnx-dropout", "linen-batchnorm", "linen-both"],
)
def test_every_front_end_refuses_a_training_mode_layer(data, make, names):
    x, y, bank = data
    model = mk.MTBKDModel(mk.Student(make()), bank)
    key = jax.random.key(0)
    runs = [
        lambda: mk.run_map(key, model, x, y, num_steps=5, progress_bar=False),
        lambda: mk.run_nuts(key, model, x, y, num_warmup=2, num_draws=2, progress_bar=False),
        lambda: mk.run_sgmcmc(
            key, model, x, y, batch_size=10, num_epochs=1, draws_per_epoch=1, progress_bar=False
        ),
    ]
    for run in runs:
        with pytest.raises(ValueError, match="changes its state other than the weights") as info:
            run()
        message = str(info.value)
        assert all(name in message for name in names), message
        assert "module.eval()" in message and "use_running_average=True" in message


def test_the_numpyro_kernel_refuses_a_training_mode_layer(data):
    x, y, bank = data
    model = mk.MTBKDModel(mk.Student(NormNet(nnx.Rngs(0), rate=0.0)), bank)
    mcmc = MCMC(SGMCMC(model, batch_size=10), num_warmup=0, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="bn.mean"):
        mcmc.run(jax.random.key(0), jnp.asarray(x), jnp.asarray(y))


def test_a_layer_that_normalises_over_the_batch_is_refused(data):
    x, y, bank = data
    model = mk.MTBKDModel(mk.Student(BatchCentred(nnx.Rngs(0))), bank)
    with pytest.raises(ValueError, match="changes with the other examples in its batch"):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=5, progress_bar=False)


def test_dropout_at_rate_zero_and_evaluation_mode_are_accepted(data):
    x = data[0]
    check_per_example(_with(NormNet(nnx.Rngs(0), rate=0.0), use_running_average=True), x)
    evaluated = NormNet(nnx.Rngs(0))
    evaluated.eval()
    check_per_example(evaluated, x)
    check_per_example(LinenNormNet(train=False, dropout=True), x)
    check_per_example(mk.MLP(F, C, hidden=(8,), rngs=nnx.Rngs(0)), x)


def test_the_probe_leaves_the_users_module_as_it_was(data):
    module = NormNet(nnx.Rngs(0))
    before = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
    with pytest.raises(ValueError):
        check_per_example(module, data[0])
    after = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_evaluation_mode_batchnorm_uses_its_running_statistics(data):
    """The lifted network equals the module's own evaluation-mode function, with pretrained
    running statistics (not 0 and 1) as fixed constants, and one example's logits do not
    depend on its batch. Ignoring the statistics would be off by several units here."""
    x = jnp.asarray(data[0])
    module = NormNet(nnx.Rngs(0))
    module.eval()
    module.bn.mean[...] = jnp.linspace(-2.0, 2.0, 8)
    module.bn.var[...] = jnp.linspace(0.25, 4.0, 8)
    student = mk.Student(module)
    params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    weights = {
        "student." + ".".join(str(k.key) for k in path): value
        for path, value in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    expected = module(x)
    np.testing.assert_allclose(student.logits(weights, x), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(student.logits(weights, x[:1]), expected[:1], rtol=1e-6, atol=1e-6)
    fresh = NormNet(nnx.Rngs(0))
    fresh.eval()
    assert np.max(np.abs(np.asarray(fresh(x)) - np.asarray(expected))) > 0.5


def test_a_bound_linen_module_keeps_its_trained_batch_statistics(data):
    """``Student(module.bind(variables))``: the bound ``batch_stats`` are the BatchNorm's
    fixed statistics, in the lifted network, the probe and a run's predictions, as an NNX
    module's are (they were replaced by fresh mean 0 / var 1, off by 0.74 in a user's probe).
    The weights are still sampled; an unbound module still uses the initial statistics."""
    x, y, bank = data
    module = LinenNormNet()
    initial = module.init(jax.random.key(0), x[:1])
    trained = {"mean": jnp.linspace(-2.0, 2.0, 8), "var": jnp.linspace(0.25, 4.0, 8)}
    bound = module.bind({"params": initial["params"], "batch_stats": {"BatchNorm_0": trained}})
    student = mk.Student(bound)
    weights = student.init_weights(jax.random.key(1), jnp.asarray(x))
    params = {
        layer: {k: weights[f"student.{layer}.{k}"] for k in initial["params"][layer]}
        for layer in initial["params"]
    }
    expected = module.apply({"params": params, "batch_stats": {"BatchNorm_0": trained}}, x)
    np.testing.assert_allclose(student.logits(weights, x), expected, rtol=1e-5, atol=1e-5)
    stale = module.apply({"params": params, "batch_stats": initial["batch_stats"]}, x)
    assert np.max(np.abs(np.asarray(stale) - np.asarray(expected))) > 0.5
    unbound = mk.Student(module).logits(weights, x)
    np.testing.assert_allclose(unbound, stale, rtol=1e-5, atol=1e-5)
    fit = mk.run_map(jax.random.key(0), mk.MTBKDModel(student, bank), x, y, num_steps=3,
                     progress_bar=False)  # fmt: skip
    point = {k: v[0, 0] for k, v in fit.draws.items()}
    np.testing.assert_allclose(
        fit.predict_logits(x)[0], student.logits(point, x), rtol=1e-5, atol=1e-5
    )
    again = student.with_prior(mk.normal_prior(0.5)).logits(weights, x)  # another prior
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-5)


def test_evaluation_mode_students_sample_and_predict_per_example(data):
    """NNX and linen students with an evaluation-mode BatchNorm run through MAP, NUTS and
    SGLD; their predictions for an example are the same alone as in a batch."""
    x, y, bank = data
    key = jax.random.key(0)
    nnx_module = NormNet(nnx.Rngs(0))
    nnx_module.eval()
    for module in (nnx_module, LinenNormNet(train=False, dropout=True)):
        model = mk.MTBKDModel(mk.Student(module), bank)
        posteriors = [
            mk.run_map(key, model, x, y, num_steps=20, progress_bar=False),
            mk.run_nuts(key, model, x, y, num_warmup=20, num_draws=10, progress_bar=False),
            mk.run_sgmcmc(
                key, model, x, y, batch_size=10, num_epochs=2, draws_per_epoch=2,
                progress_bar=False,
            ),
        ]  # fmt: skip
        for posterior in posteriors:
            in_batch = np.asarray(posterior.predict(x))
            alone = np.asarray(posterior.predict(x[:1]))
            assert np.all(np.isfinite(in_batch))
            np.testing.assert_allclose(alone[:, 0], in_batch[:, 0], rtol=1e-5, atol=1e-6)
    names = mk.Student(LinenNormNet()).parameter_names((F,))
    assert "BatchNorm_0.scale" in names and not any("mean" in n for n in names)


def _with(module: nnx.Module, **attributes: bool) -> nnx.Module:
    module.set_attributes(**attributes)
    return module


def test_a_module_put_back_in_training_mode_is_refused_at_the_next_run(data):
    x, y, bank = data
    module = NormNet(nnx.Rngs(0))
    module.eval()
    model = mk.MTBKDModel(mk.Student(module), bank)
    mk.run_map(jax.random.key(0), model, x, y, num_steps=2, progress_bar=False)
    module.train()
    with pytest.raises(ValueError, match="bn.mean"):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=2, progress_bar=False)


class Sowing(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.l1 = nnx.Linear(F, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, C, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.tanh(self.l1(x))
        self.sow(nnx.Intermediate, "hidden", h)
        return self.l2(h)


class Recurrent(nnx.Module):
    """An LSTM over the features as a sequence: its zero carry is made from an RNG stream,
    which advances the stream's counter without changing the output."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.rnn = nnx.RNN(nnx.LSTMCell(2, 8, rngs=rngs), rngs=rngs)
        self.head = nnx.Linear(8, C, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.rnn(x.reshape(x.shape[0], F // 2, 2))[:, -1])


@pytest.mark.parametrize("make", [Sowing, Recurrent], ids=["sow", "lstm"])
def test_state_that_does_not_change_the_output_is_accepted(data, make):
    """Intermediates and an RNG-made zero carry change non-weight state, not the function."""
    x, y, bank = data
    model = mk.MTBKDModel(mk.Student(make(nnx.Rngs(0))), bank)
    posterior = mk.run_map(jax.random.key(0), model, x, y, num_steps=5, progress_bar=False)
    np.testing.assert_allclose(
        np.asarray(posterior.predict(x[:1]))[:, 0], np.asarray(posterior.predict(x))[:, 0],
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_a_training_mode_linen_batchnorm_fails_inside_any_numpyro_use(data):
    """Without the front-ends' probe (NumPyro's own NUTS, Predictive, handlers.seed) the
    linen statistics are applied immutably, so a training-mode BatchNorm cannot update them."""
    x = jnp.asarray(data[0])
    student = mk.Student(LinenNormNet(train=True))
    with pytest.raises(Exception, match="is immutable"):
        handlers.seed(student, jax.random.key(0))(x)


def test_the_numpyro_kernel_probes_the_student_under_parallel_chains(data):
    """NumPyro inits chain_method="parallel" inside pmap: the probe runs at compile time."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ["JAX_PLATFORMS"] = "cpu"
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from numpyro.infer import MCMC
        import mtbkd_jax as mk
        from mtbkd_jax.infer import SGMCMC
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(40, 4)), jnp.float32)
        y = jnp.asarray(rng.integers(0, 3, 40))
        bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 40, 3)), names=["a", "b"])
        model = mk.MTBKDModel(mk.Student(mk.MLP(4, 3, hidden=(4,), rngs=nnx.Rngs(0))), bank)
        mcmc = MCMC(SGMCMC(model, batch_size=10), num_warmup=2, num_samples=2, num_chains=2,
                    chain_method="parallel", progress_bar=False)
        mcmc.run(jax.random.key(0), x, y)
        start = {k: v[:, 0] for k, v in mcmc.get_samples(group_by_chain=True).items()}
        mcmc.run(jax.random.key(1), x, y, init_params=start)
        print("ok", len(mcmc.get_samples()))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_a_training_mode_linen_dropout_alone_is_refused(data):
    x, y, bank = data

    class Drop(linen.Module):
        @linen.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            return linen.Dense(C)(linen.Dropout(0.5, deterministic=False)(linen.Dense(8)(x)))

    model = mk.MTBKDModel(mk.Student(Drop()), bank)
    with pytest.raises(ValueError, match='PRNG for "dropout"'):
        mk.run_map(jax.random.key(0), model, x, y, num_steps=2, progress_bar=False)
