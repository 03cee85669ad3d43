"""The fingerprint's parts by value: a change anywhere is seen, an identical call is equal in
a new process (no memory addresses), and a closure's constants show through the probe."""

import subprocess
import sys

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.infer import fingerprint as fingerprint_module
from mtbkd_jax.infer.checkpoint import CheckpointError
from mtbkd_jax.infer.fingerprint import (
    RunFingerprint,
    optimizer_digest,
    schedule_values,
    source_digest,
    static_value,
)


def test_schedules_are_compared_at_every_step():
    """A staircase whose boundary moves between any two grid points is a different schedule."""
    first = optax.piecewise_constant_schedule(1e-5, {1000: 0.1})
    moved = optax.piecewise_constant_schedule(1e-5, {1030: 0.1})
    same = optax.piecewise_constant_schedule(1e-5, {1000: 0.1})
    assert schedule_values(first, 2480) == schedule_values(same, 2480)
    assert schedule_values(first, 2480) != schedule_values(moved, 2480)
    assert schedule_values(first, 2480) != schedule_values(first, 2481)


def test_optimisers_are_compared_over_the_warm_start_and_at_every_scale():
    assert optimizer_digest(optax.adam(1e-3), 50) == optimizer_digest(optax.adam(1e-3), 50)
    assert optimizer_digest(optax.adam(1e-3), 50) != optimizer_digest(optax.adam(2e-3), 50)
    clipped = [optax.clip_by_global_norm(limit) for limit in (10.0, 100.0)]
    assert optimizer_digest(clipped[0], 100) != optimizer_digest(clipped[1], 100)
    decays = [
        optax.adam(optax.piecewise_constant_schedule(3e-4, {boundary: 0.1}))
        for boundary in (100, 200)
    ]
    assert optimizer_digest(decays[0], 300) != optimizer_digest(decays[1], 300)


def test_static_values_hold_no_memory_address():
    import functools

    import jax.numpy as jnp

    values = [jnp.tanh, lambda x: x, functools.partial(np.add, 1), object(), (1, np.arange(3))]
    for value in values:
        assert " at 0x" not in repr(static_value(value)), value
    big = np.zeros(2000)
    changed = big.copy()
    changed[1000] = 1.0  # a repr would elide the middle of this array
    assert static_value((1, big)) != static_value((1, changed))


def _student(scale):
    return mk.Student(
        mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)),
        prior=lambda name, shape: dist.Normal(0.0, scale),
    )


def test_a_base_prior_without_description_is_compared_by_value():
    assert _student(1.0).prior_digest() == _student(1.0).prior_digest()
    assert _student(1.0).prior_digest() != _student(2.0).prior_digest()
    flat = mk.Student(mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)), prior=mk.flat_prior())
    assert flat.prior_digest() != _student(1.0).prior_digest()


FINGERPRINT_IN_A_PROCESS = """
import jax, numpy as np, numpyro.distributions as dist
from flax import nnx
import mtbkd_jax as mk
from mtbkd_jax.infer.fingerprint import model_description
from mtbkd_jax.infer.gradients import minibatch_plan
student = mk.Student(mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)),
                     prior=lambda name, shape: dist.Normal(0.0, 1.0))
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 3)).astype(np.float32)
y = rng.integers(0, 2, 40)
bank = mk.TeacherBank.from_logits(rng.normal(size=(2, 40, 2)))
model = mk.MTBKDModel(student, bank)
features, labels = jax.numpy.asarray(x), jax.numpy.asarray(y)
plan = minibatch_plan(model, (features, labels), {}, 8, None)
print(model_description(model, plan, features))
"""


def test_the_model_description_is_the_same_in_two_processes():
    """A base prior given as a function once put its memory address into the settings, so no
    resume in a new process was ever accepted."""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT_IN_A_PROCESS],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1] and " at 0x" not in outputs[0]


def test_probe_values_are_compared_one_by_one():
    a = RunFingerprint({}, {"logdensity_at_start": [1.0, 2.0, 3.0]})
    assert a.differences(RunFingerprint({}, {"logdensity_at_start": [1.0, 2.0, 3.0]})) == []
    moved = RunFingerprint({}, {"logdensity_at_start": [1.0, 2.0, 3.1]})
    assert "logdensity_at_start" in a.differences(moved)[0]
    with pytest.raises(TypeError, match="settings"):
        RunFingerprint({"model": {"settings": {"f": object()}}}, {}).to_json_text()


def _closure_model(teacher_logits):
    """A user's model whose teacher prior is hidden in a closure."""
    prior = mk.TeacherPrior.build(mk.TeacherBank.from_logits(teacher_logits), concentration=10.0)

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([3, 2]).to_event(2))
        with numpyro.plate("data", x.shape[0], subsample_size=20) as idx:
            logits = x[idx] @ w
            numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])
            mk.teacher_prior_factor("prior", logits, prior.take(idx), prior_power=0.1)

    return model


def test_a_closure_changed_only_far_from_the_first_minibatch_is_seen(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=(1, 200, 2))
    changed = logits.copy()
    changed[0, 190] = [5.0, -5.0]  # one example, in the last minibatch
    settings = dict(num_epochs=1, step_size=1e-4, draws_per_epoch=1, progress_bar=False)
    path = tmp_path / "own.ckpt"
    mk.run_sgmcmc(jax.random.key(0), _closure_model(logits), x, y, checkpoint_path=path, **settings)
    with pytest.raises(CheckpointError, match="logdensity_at_start"):
        mk.run_sgmcmc(
            jax.random.key(0), _closure_model(changed), x, y, checkpoint_path=path, **settings
        )


def test_the_source_digest_sees_any_change_to_a_python_file(tmp_path):
    """An editable install (or a checkout on PYTHONPATH) keeps its version number when its
    code changes: the digest of the package's files is what tells."""
    package = tmp_path / "pkg"
    (package / "infer").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "infer" / "a.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    first = source_digest(package)
    source_digest.cache_clear()
    assert source_digest(package) == first  # the same files, the same digest
    (package / "notes.txt").write_text("changed, but not code")
    source_digest.cache_clear()
    assert source_digest(package) == first
    (package / "infer" / "a.py").write_text("y = 3\n")
    source_digest.cache_clear()
    assert source_digest(package) != first
    (package / "infer" / "a.py").write_text("y = 2\n")
    (package / "infer" / "a.py").rename(package / "infer" / "b.py")  # same bytes, moved
    source_digest.cache_clear()
    assert source_digest(package) != first


def _checkpointed_run(tmp_path):
    """A small closure model's data and run_sgmcmc settings writing ``tmp_path / run.ckpt``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    model = _closure_model(rng.normal(size=(1, 60, 2)))
    settings = dict(num_epochs=1, step_size=1e-4, draws_per_epoch=1, progress_bar=False,
                    checkpoint_path=tmp_path / "run.ckpt")  # fmt: skip
    return model, x, y, settings


def test_a_checkpoint_of_other_package_code_is_refused(tmp_path, monkeypatch):
    model, x, y, settings = _checkpointed_run(tmp_path)
    mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)
    mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)  # the same code resumes
    monkeypatch.setattr(fingerprint_module, "source_digest", lambda root: "edited")
    with pytest.raises(CheckpointError, match="mtbkd_jax_source"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)


def test_a_checkpoint_resumed_with_x64_toggled_names_the_flag(tmp_path):
    """With jax_enable_x64 toggled, the refusal listed digests and probe values that its
    effects changed, not the flag itself."""
    model, x, y, settings = _checkpointed_run(tmp_path)
    mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)
    with (
        jax.enable_x64(True),
        pytest.raises(CheckpointError, match="jax_enable_x64: checkpoint False"),
    ):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)


def test_a_checkpoint_resumed_with_another_prng_names_the_flag(tmp_path):
    """``jax_threefry_partitionable`` changes every random bit, so every draw; a resume under
    the other value was refused only because the probe's own random points moved, by a
    message blaming the model's code, constants or data."""
    model, x, y, settings = _checkpointed_run(tmp_path)
    flag = bool(jax.config.jax_threefry_partitionable)
    mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)
    with (
        jax.threefry_partitionable(not flag),
        pytest.raises(CheckpointError, match=f"jax_threefry_partitionable: checkpoint {flag}"),
    ):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, **settings)


def test_a_logits_fn_changed_only_where_the_logits_are_large_is_refused(tmp_path):
    """The streamed predictions were probed at chain 0's start only: a ``logits_fn`` clipped
    at 0.5 resumed a run started at zero weights (logits 0, where the clip does nothing), and
    its streamed predictive mixed the two functions. They are probed away from it too."""
    from mtbkd_jax.infer._start import away_from

    model, x, y, settings = _checkpointed_run(tmp_path)
    start = {"w": np.zeros((3, 2), np.float32)}
    settings.update(predict_inputs=x, init_params=start)
    mk.run_sgmcmc(jax.random.key(0), model, x, y, logits_fn=lambda w, f: f @ w["w"], **settings)
    far = np.asarray(away_from({"w": jax.numpy.zeros((3, 2))})["w"])
    assert np.abs(x[:8] @ far).max() > 0.5  # the probe's far point reaches the clip

    def clipped(w, f):
        return jax.numpy.clip(f @ w["w"], -0.5, 0.5)

    with pytest.raises(CheckpointError, match="predictions_away_from_start"):
        mk.run_sgmcmc(jax.random.key(0), model, x, y, logits_fn=clipped, **settings)
