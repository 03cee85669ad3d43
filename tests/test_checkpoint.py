"""Checkpoints: a killed run resumes to the draws of an uninterrupted one, bit for bit, wherever
it was killed (mid-chunk, mid-append of the draws, mid-rewrite of the state); a checkpoint is
never resumed by another run (model, data, settings, schedule, start, seed), nor with a state or
draws file other than the one written (another run's draws, flipped bits, a damaged block), and
every bad file is one clear error."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import mtbkd_jax as mk
from mtbkd_jax.infer import checkpoint as checkpoint_module
from mtbkd_jax.infer.checkpoint import CheckpointError

PROBLEM = """
import jax, numpy as np, optax
from flax import nnx
import mtbkd_jax as mk

def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=200) > 0).astype(np.int32)
    zeros = np.zeros(200)
    teachers = mk.TeacherBank.from_logits(
        np.stack([np.stack([zeros, 2 * x[:, 0]], -1), np.stack([zeros, x[:, 1]], -1)])
    )
    return x, y, teachers

def model_for(teachers, concentration=10.0, activation="tanh"):
    student = mk.Student(mk.MLP(3, 2, hidden=(4,), activation=activation, rngs=nnx.Rngs(0)))
    return mk.MTBKDModel(student, teachers, concentration=concentration)

def run(model, x, y, key=5, **kwargs):
    settings = dict(
        batch_size=20, num_epochs=6, step_size=1e-3, draws_per_epoch=2, num_chains=2,
        chunk_epochs=1, progress_bar=False, warm_start_epochs=1,
        warm_start_optimizer=optax.adam(1e-2),
    )
    settings.update(kwargs)
    return mk.run_sgmcmc(jax.random.key(key), model, x, y, **settings)
"""

namespace: dict = {}
exec(textwrap.dedent(PROBLEM), namespace)  # the same problem in this process and in the killed one
problem, model_for, run = namespace["problem"], namespace["model_for"], namespace["run"]


@pytest.fixture(scope="module")
def reference():
    x, y, teachers = problem()
    return run(model_for(teachers), x, y)


def _assert_same_draws(a, b):
    assert set(a.draws) == set(b.draws)
    for name in a.draws:
        np.testing.assert_array_equal(a.draws[name], b.draws[name])
    np.testing.assert_array_equal(a.sample_stats["step_size"], b.sample_stats["step_size"])


REAL_SAVE = checkpoint_module.Checkpoint.save


def _count_saves(monkeypatch, saves: list) -> None:
    """Checkpoint writes as the module's own (not a patch of this test's), each one's next
    epoch appended to ``saves``."""
    real_save = REAL_SAVE
    monkeypatch.setattr(
        checkpoint_module.Checkpoint,
        "save",
        lambda self, state, chunk, progress: (
            saves.append(progress["next_epoch"]),
            real_save(self, state, chunk, progress),
        ),
    )


def test_a_failed_last_write_returns_the_finished_posterior_and_a_rerun_resumes(
    reference, tmp_path, monkeypatch
):
    """A full disk at the last chunk's write raised a bare OSError after every epoch had been
    sampled, and the posterior was lost with it (a review). Now it is returned with a warning;
    the file holds the chunks written before, from which a rerun resumes to the same draws."""
    import errno

    x, y, teachers = problem()
    path = tmp_path / "run.ckpt"
    real_save = checkpoint_module.Checkpoint.save

    def full_at_the_end(self, state, chunk, progress):
        if progress["next_epoch"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, state, chunk, progress)

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", full_at_the_end)
    with pytest.warns(RuntimeWarning, match="writing its last checkpoint .* No space left"):
        finished = run(model_for(teachers), x, y, checkpoint_path=path)
    _assert_same_draws(finished, reference)
    saves = []
    _count_saves(monkeypatch, saves)
    _assert_same_draws(run(model_for(teachers), x, y, checkpoint_path=path), reference)
    assert saves == [6]  # only the chunk whose write had failed was sampled again


def test_a_write_failing_mid_run_is_raised_as_the_checkpoints_and_a_rerun_resumes(
    reference, tmp_path, monkeypatch
):
    """A write that fails mid-run (a full disk) is raised at the next chunk's write, as a bare
    OSError that did not say it came from the checkpoint (a review); it now carries a note
    naming the checkpoint, and the rerun resumes from the chunks written before it."""
    import errno

    x, y, teachers = problem()
    path = tmp_path / "run.ckpt"

    def full_at_epoch_three(self, state, chunk, progress):
        if progress["next_epoch"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        REAL_SAVE(self, state, chunk, progress)

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", full_at_epoch_three)
    with pytest.raises(OSError, match="No space left") as error:
        run(model_for(teachers), x, y, checkpoint_path=path)
    assert any("background write of checkpoint" in note for note in error.value.__notes__)
    saves = []
    _count_saves(monkeypatch, saves)
    _assert_same_draws(run(model_for(teachers), x, y, checkpoint_path=path), reference)
    assert saves == [3, 4, 5, 6]  # resumed after the two chunks written


def test_an_interrupted_run_resumes_where_it_stopped(reference, tmp_path, monkeypatch):
    x, y, teachers = problem()
    path = tmp_path / "run.ckpt.npz"
    real_save = checkpoint_module.Checkpoint.save
    saves = []

    def save_then_interrupt(self, state, chunk, progress):
        real_save(self, state, chunk, progress)
        saves.append(progress["next_epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived right after the second chunk

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(model_for(teachers), x, y, checkpoint_path=path)
    saves.clear()
    _count_saves(monkeypatch, saves)
    resumed = run(model_for(teachers), x, y, checkpoint_path=path)
    assert saves == [3, 4, 5, 6]  # it resumed after epoch 2, it did not restart
    _assert_same_draws(resumed, reference)
    # each write appended only its chunk: the draws file holds each draw once
    draws_bytes = sum(v.nbytes for v in reference.draws.values())
    draws_bytes += reference.sample_stats["step_size"].nbytes
    draws_bytes += 8 * 6  # each chunk (one epoch here) starts with its number of draws
    assert (tmp_path / "run.ckpt.npz.draws").stat().st_size == draws_bytes
    # a finished run's checkpoint gives the same posterior again without sampling
    saves.clear()
    again = run(model_for(teachers), x, y, checkpoint_path=path)
    assert saves == []
    _assert_same_draws(again, reference)


KILLER = """
import os, signal, sys
calls = [0]
kill_at = int(sys.argv[2])
real_fsync = os.fsync

def fsync_then_maybe_die(fd):
    real_fsync(fd)
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

os.fsync = fsync_then_maybe_die
x, y, teachers = problem()
run(model_for(teachers), x, y, checkpoint_path=sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "phase"),
    [(3, "draws of chunk 2 appended, state not rewritten"), (4, "new state written, not moved")],
)
def test_a_run_killed_mid_write_resumes_bit_for_bit(reference, tmp_path, kill_at, phase):
    """SIGKILL in a subprocess at a chosen point of a checkpoint write (each write fsyncs the
    draws, then the new state file): the resumed run equals an uninterrupted one."""
    path = tmp_path / "run.ckpt.npz"
    script = textwrap.dedent(PROBLEM) + textwrap.dedent(KILLER)
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert path.exists(), phase
    if kill_at == 3:  # a torn append on top: bytes the state never committed
        with open(str(path) + ".draws", "ab") as handle:
            handle.write(b"\x00garbage of a half-written chunk")
    x, y, teachers = problem()
    resumed = run(model_for(teachers), x, y, checkpoint_path=path)
    _assert_same_draws(resumed, reference)


@pytest.fixture(scope="module")
def finished_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "run.ckpt.npz"
    x, y, teachers = problem()
    run(model_for(teachers), x, y, checkpoint_path=path, num_epochs=2)
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"concentration": 1000.0}, "concentration"),
        ({"labels": "flip"}, "labels"),
        ({"inputs": "shift"}, "inputs"),
        ({"step_size": 2e-3}, "step_size"),
        ({"random_draw_positions": False}, "random_draw_positions"),
        ({"init_params": "zeros"}, "init_params"),
        ({"temperature": 0.5}, "temperature"),
        ({"teachers": "other"}, "model"),
        ({"activation": "relu"}, "student"),
        ({"warm_start_optimizer": "other"}, "warm_start_optimizer"),
        ({"num_chains": 3}, "num_chains"),
    ],
)
def test_a_checkpoint_is_never_resumed_by_another_run(finished_checkpoint, change, named):
    x, y, teachers = problem()
    kwargs = {"num_epochs": 2}
    concentration = change.get("concentration", 10.0)
    if change.get("labels") == "flip":
        y = y.copy()
        y[0] = 1 - y[0]
    if change.get("inputs") == "shift":
        x = x.copy()
        x[3, 1] += 1e-3
    if change.get("teachers") == "other":
        teachers = teachers.select([0])
    model = model_for(teachers, concentration, change.get("activation", "tanh"))
    if "step_size" in change:
        kwargs["step_size"] = change["step_size"]
    if "random_draw_positions" in change:
        kwargs["random_draw_positions"] = change["random_draw_positions"]
    if "temperature" in change:
        kwargs["temperature"] = change["temperature"]
    if change.get("init_params") == "zeros":
        kwargs["init_params"] = {
            k: np.zeros(v) for k, v in model.student.parameter_shapes().items()
        }
        kwargs["init_params"] = {f"student.{k}": v for k, v in kwargs["init_params"].items()}
    if change.get("warm_start_optimizer") == "other":
        kwargs["warm_start_optimizer"] = optax.adam(2e-2)
    if "num_chains" in change:
        kwargs["num_chains"] = change["num_chains"]
    with pytest.raises(CheckpointError, match=named) as error:
        run(model, x, y, checkpoint_path=finished_checkpoint, **kwargs)
    assert str(finished_checkpoint) in str(error.value)
    assert "Delete it" in str(error.value)
    if "num_chains" in change:  # a setting, named: the model is not blamed (it was, a review)
        assert "so the model's density" not in str(error.value)


def test_a_setting_the_sampler_ignores_does_not_refuse_its_resume(finished_checkpoint, tmp_path):
    """SGLD ignores ``friction``: another value is warned and resumes the same draws (before,
    it was refused as a changed setting); a checkpoint written before, whose fingerprint
    recorded the friction given, resumes too. SGHMC uses it: another friction is refused."""
    x, y, teachers = problem()
    again = run(model_for(teachers), x, y, checkpoint_path=finished_checkpoint, num_epochs=2)
    with pytest.warns(UserWarning, match=r"friction=0.5 is ignored by sampler 'sgld'") as record:
        other = run(model_for(teachers), x, y, checkpoint_path=finished_checkpoint,
                    num_epochs=2, friction=0.5)  # fmt: skip
    assert record[0].filename == "<string>"  # the caller's line: the problem's run()
    _assert_same_draws(again, other)
    # as written before: the stored fingerprint holds the friction the run was given
    older = _copy(finished_checkpoint, str(finished_checkpoint) + ".draws", tmp_path)
    meta, leaves = _state_file(older)
    meta["fingerprint"]["exact"]["friction"] = 1.0
    _write_state_file(older, meta, leaves)
    with pytest.warns(UserWarning, match=r"friction=1 is ignored"):
        _assert_same_draws(again, run(model_for(teachers), x, y, checkpoint_path=older,
                                      num_epochs=2, friction=1.0))  # fmt: skip
    sghmc = tmp_path / "sghmc.ckpt"
    run(model_for(teachers), x, y, checkpoint_path=sghmc, num_epochs=2, sampler="sghmc")
    with pytest.raises(CheckpointError, match=r"friction: checkpoint 0.1, this run 0.5"):
        run(model_for(teachers), x, y, checkpoint_path=sghmc, num_epochs=2, sampler="sghmc",
            friction=0.5)  # fmt: skip


def test_an_identical_schedule_resumes_and_another_does_not(tmp_path):
    """Schedules are fingerprinted by value: the same call resumes (no memory address in the
    fingerprint), another decay is refused."""
    x, y, teachers = problem()
    path = tmp_path / "run.ckpt.npz"
    first = run(
        model_for(teachers),
        x,
        y,
        checkpoint_path=path,
        num_epochs=2,
        step_size=mk.infer.schedules.polynomial_decay(1e-3, 1.0, 0.55),
    )
    again = run(
        model_for(teachers),
        x,
        y,
        checkpoint_path=path,
        num_epochs=2,
        step_size=mk.infer.schedules.polynomial_decay(1e-3, 1.0, 0.55),
    )
    _assert_same_draws(first, again)
    with pytest.raises(CheckpointError, match="step_size_values"):
        run(
            model_for(teachers),
            x,
            y,
            checkpoint_path=path,
            num_epochs=2,
            step_size=mk.infer.schedules.polynomial_decay(1e-3, 1.0, 0.6),
        )


def _own_model(concentration):
    """A user's model whose teacher prior is hidden in a closure: only the probe can see it."""
    _, _, teachers = problem()
    prior = mk.TeacherPrior.build(teachers, concentration=concentration)

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([3, 2]).to_event(2))
        with numpyro.plate("data", x.shape[0], subsample_size=20) as idx:
            logits = x[idx] @ w
            numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])
            mk.teacher_prior_factor("prior", logits, prior.take(idx), prior_power=0.1)

    return model


def test_a_closure_over_other_constants_is_caught_by_the_probe(tmp_path):
    x, y, _ = problem()
    path = tmp_path / "own.ckpt.npz"
    settings = dict(num_epochs=2, step_size=1e-3, draws_per_epoch=2, progress_bar=False)
    mk.run_sgmcmc(jax.random.key(0), _own_model(10.0), x, y, checkpoint_path=path, **settings)
    mk.run_sgmcmc(jax.random.key(0), _own_model(10.0), x, y, checkpoint_path=path, **settings)
    with pytest.raises(CheckpointError, match="logdensity_at_start"):
        mk.run_sgmcmc(jax.random.key(0), _own_model(1000.0), x, y, checkpoint_path=path, **settings)


def _clipped(bound):
    """A user's model whose code changed only where its logits are large: a clip at ``bound``
    (``None``: no clip)."""

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([3, 2]).to_event(2))
        with numpyro.plate("data", x.shape[0], subsample_size=20) as idx:
            logits = x[idx] @ w
            logits = logits if bound is None else jax.numpy.clip(logits, -bound, bound)
            numpyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])

    return model


@pytest.mark.parametrize("where", ["chain 1's start", "away from the starts"])
def test_a_model_changed_only_where_chain_0_does_not_start_is_refused(tmp_path, where):
    """The probe read chain 0's start alone: a clip added to the logits where no chain 0
    evaluation reaches resumed the other model's checkpoint, whose later draws (larger
    weights) it changes. Every chain's start, and a point away from each, now tell."""
    x, y, _ = problem()
    path = tmp_path / "clip.ckpt.npz"
    zero = {"w": np.zeros((3, 2), np.float32)}
    large = {"w": np.array([[3.0, -3.0]] * 3, np.float32)}
    starts, bound = ([zero, large], 3.0) if where == "chain 1's start" else ([zero, zero], 0.5)
    settings = dict(num_epochs=2, step_size=1e-4, draws_per_epoch=2, progress_bar=False,
                    num_chains=2, init_params=starts, checkpoint_path=path)  # fmt: skip
    mk.run_sgmcmc(jax.random.key(0), _clipped(None), x, y, **settings)
    # chain 0 starts at w = 0 (logits 0): its probe is the same with or without the clip
    with pytest.raises(CheckpointError) as refused:
        mk.run_sgmcmc(jax.random.key(0), _clipped(bound), x, y, **settings)
    text = str(refused.value)
    assert "logdensity_at_start:" not in text and "log_density_at_start." not in text
    entry = "at_chain_starts" if where == "chain 1's start" else "away_from_starts"
    assert f"logdensity_{entry}" in text and "a constant or prior" in text
    mk.run_sgmcmc(jax.random.key(0), _clipped(None), x, y, **settings)  # the same model resumes


def _hierarchical(tau_scale):
    """A user's hierarchical model on 50,000 rows: a hyperprior on the weights' scale."""

    def model(x, y=None, bias_prior=None):
        tau = numpyro.sample("tau", dist.HalfNormal(tau_scale))
        w = numpyro.sample("w", dist.Normal(0, tau).expand([3, 2]).to_event(2))
        b = numpyro.sample("b", bias_prior.expand([2]).to_event(1))
        with numpyro.plate("data", x.shape[0], subsample_size=500) as idx:
            numpyro.sample("y", dist.Categorical(logits=x[idx] @ w + b), obs=y[idx])

    return model


def test_a_changed_hyperprior_or_prior_argument_is_refused_however_large_the_data(tmp_path):
    """At N = 50,000 the likelihood's ~35,000 nats hid a hyperprior's scale changed from 1 to
    5 (1.6 nats) inside the probe's 1e-4 relative tolerance on the total log density, and a
    prior passed in model_kwargs was recorded by its type alone (Normal(0, 1) = Normal(0, 3)):
    both resumed another model's checkpoint silently. Each site's own log density, and the
    distribution's parameters, now tell; the identical run still resumes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 3)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=50_000) > 0).astype(np.int32)
    path = tmp_path / "hierarchical.ckpt.npz"
    settings = dict(num_epochs=1, step_size=1e-6, draws_per_epoch=2, progress_bar=False,
                    checkpoint_path=path)  # fmt: skip

    def run(tau_scale, bias_prior):
        kwargs = {"bias_prior": bias_prior}
        model = _hierarchical(tau_scale)
        return mk.run_sgmcmc(jax.random.key(0), model, x, y, model_kwargs=kwargs, **settings)

    first = run(1.0, dist.Normal(0.0, 1.0))
    again = run(1.0, dist.Normal(0.0, 1.0))
    np.testing.assert_array_equal(again.draws["w"], first.draws["w"])
    with pytest.raises(CheckpointError, match=r"log_density_at_start\.tau.*a constant or prior"):
        run(5.0, dist.Normal(0.0, 1.0))
    with pytest.raises(CheckpointError, match="bias_prior"):
        run(1.0, dist.Normal(0.0, 3.0))


@pytest.mark.parametrize(
    "damage", ["truncated", "not a checkpoint", "text file", "draws deleted", "another model"]
)
def test_a_bad_checkpoint_file_is_one_clear_error(finished_checkpoint, tmp_path, damage):
    path = tmp_path / "run.ckpt.npz"
    shutil.copy(finished_checkpoint, path)
    shutil.copy(str(finished_checkpoint) + ".draws", str(path) + ".draws")
    x, y, teachers = problem()
    model = model_for(teachers)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not a checkpoint":
        np.savez(path, something=np.zeros(3))
    elif damage == "text file":
        path.write_text("hello")
    elif damage == "draws deleted":
        os.remove(str(path) + ".draws")
    elif damage == "another model":
        from flax import nnx

        wider = mk.Student(mk.MLP(3, 2, hidden=(5,), rngs=nnx.Rngs(0)))
        model = mk.MTBKDModel(wider, teachers)
    with pytest.raises(CheckpointError) as error:
        run(model, x, y, checkpoint_path=path, num_epochs=2)
    message = str(error.value)
    assert str(path) in message and "checkpoint_path" in message


def test_checkpoint_paths_are_checked_before_any_compute(tmp_path):
    x, y, teachers = problem()
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="checkpoint_path"):
        run(model_for(teachers), x, y, checkpoint_path=folder)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match="checkpoint_path"):
        run(model_for(teachers), x, y, checkpoint_path=blocker / "run.ckpt.npz")


@pytest.fixture(scope="module")
def interrupted_checkpoints(tmp_path_factory):
    """Checkpoints of two runs of four epochs, seeds 5 and 6, each interrupted (as by Ctrl-C)
    after its second chunk: key -> state file."""
    folder = tmp_path_factory.mktemp("interrupted")
    x, y, teachers = problem()
    real_save = checkpoint_module.Checkpoint.save
    paths = {}
    for key in (5, 6):
        saves = []

        def save_then_interrupt(self, state, chunk, progress, saves=saves):
            real_save(self, state, chunk, progress)
            saves.append(progress["next_epoch"])
            if len(saves) == 2:
                raise KeyboardInterrupt

        paths[key] = folder / f"seed{key}.ckpt"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(checkpoint_module.Checkpoint, "save", save_then_interrupt)
            with pytest.raises(KeyboardInterrupt):
                run(model_for(teachers), x, y, key=key, checkpoint_path=paths[key], num_epochs=4)
    return paths


def _copy(state, draws, folder):
    """A checkpoint in ``folder`` of the state file ``state`` and the draws file ``draws``."""
    path = folder / "run.ckpt"
    shutil.copy(state, path)
    shutil.copy(draws, str(path) + ".draws")
    return path


def _flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _state_file(path):
    """The state file's (JSON header, leaves' bytes)."""
    data = path.read_bytes()
    size = int(np.frombuffer(data[8:16], dtype="<u8")[0])
    return json.loads(data[16 : 16 + size]), data[16 + size : -16]


def _write_state_file(path, meta, leaves, digests=True):
    """A state file of ``meta`` and ``leaves``, its digests recomputed from the files as they
    are (or, ``digests=False``, none: as written before they existed)."""
    if digests:
        committed = meta["draws"]["committed_bytes"]
        draws = path.with_name(path.name + ".draws").read_bytes()[:committed]
        meta["draws"]["blake2b"] = hashlib.blake2b(draws, digest_size=16).hexdigest()
    else:
        del meta["draws"]["blake2b"]
    header = json.dumps(meta).encode()
    body = b"MTBKDCKP" + np.asarray([len(header)], dtype="<u8").tobytes() + header + leaves
    path.write_bytes(body + (hashlib.blake2b(body, digest_size=16).digest() if digests else b""))


def _resume_refused(path, match):
    x, y, teachers = problem()
    with pytest.raises(CheckpointError, match=match) as error:
        run(model_for(teachers), x, y, checkpoint_path=path, num_epochs=4)
    message = str(error.value)
    assert str(path) in message and "checkpoint_path" in message
    return message


def test_an_interrupted_checkpoint_resumes_bit_for_bit(
    reference, interrupted_checkpoints, tmp_path
):
    """The files the tests below damage resume, untouched, to the uninterrupted run's draws (and
    rewriting their digests as the writer does changes nothing)."""
    x, y, teachers = problem()
    seed5 = interrupted_checkpoints[5]
    path = _copy(seed5, str(seed5) + ".draws", tmp_path)
    _write_state_file(path, *_state_file(path))
    assert path.read_bytes() == seed5.read_bytes()
    resumed = run(model_for(teachers), x, y, checkpoint_path=path, num_epochs=4)
    _assert_same_draws(resumed, run(model_for(teachers), x, y, num_epochs=4))


def test_another_runs_draws_file_of_the_same_length_is_refused(interrupted_checkpoints, tmp_path):
    seed5, seed6 = interrupted_checkpoints[5], interrupted_checkpoints[6]
    path = _copy(seed5, str(seed6) + ".draws", tmp_path)
    assert os.path.getsize(str(seed5) + ".draws") == os.path.getsize(str(path) + ".draws")
    message = _resume_refused(path, "does not match the state that committed it")
    assert "run.ckpt.draws" in message


@pytest.mark.parametrize("where", ["draws", "state leaves", "state progress"])
def test_a_flipped_bit_in_either_file_is_refused(interrupted_checkpoints, tmp_path, where):
    seed5 = interrupted_checkpoints[5]
    path = _copy(seed5, str(seed5) + ".draws", tmp_path)
    if where == "draws":  # a byte of the first block's draws (past its 8-byte count)
        _flip_bit(path.with_name(path.name + ".draws"), 100)
        _resume_refused(path, "the draws file run.ckpt.draws does not match the state")
        return
    meta, leaves = _state_file(path)
    data = path.read_bytes()
    if where == "state leaves":
        _flip_bit(path, len(data) - 16 - len(leaves) // 2)
    else:  # the epoch to resume from: "2" -> "3" is one bit, and would resume wrong draws
        assert meta["progress"]["next_epoch"] == 2
        _flip_bit(path, data.index(b'"next_epoch": 2') + len(b'"next_epoch": '))
    _resume_refused(path, "its bytes do not match the digest written with them")


@pytest.mark.parametrize("count", [1000, -1, 0])
@pytest.mark.parametrize("digests", ["kept", "recomputed"])
def test_a_damaged_block_count_is_one_clear_error(
    interrupted_checkpoints, tmp_path, count, digests
):
    """A block's 8-byte count damaged: the draws' digest catches it; with the digests
    recomputed to match (only the parser can see it), the parser does."""
    seed5 = interrupted_checkpoints[5]
    path = _copy(seed5, str(seed5) + ".draws", tmp_path)
    draws = path.with_name(path.name + ".draws")
    data = bytearray(draws.read_bytes())
    data[:8] = np.int64(count).tobytes()
    draws.write_bytes(bytes(data))
    if digests == "recomputed":
        _write_state_file(path, *_state_file(path))
    match = "does not match the state" if digests == "kept" else "cannot be parsed"
    message = _resume_refused(path, match)
    assert "run.ckpt.draws" in message


def test_a_checkpoint_written_before_the_digests_is_refused(interrupted_checkpoints, tmp_path):
    seed5 = interrupted_checkpoints[5]
    path = _copy(seed5, str(seed5) + ".draws", tmp_path)
    _write_state_file(path, *_state_file(path), digests=False)
    _resume_refused(path, "earlier version of mtbkd_jax, whose checkpoints carry no digests")
