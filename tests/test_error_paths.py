"""Every ``raise`` the rest of the suite does not reach: each test asserts the error's type and
that its message names the argument (or the file) concerned.

The inputs are the smallest that reach each line: fake data files written to ``tmp_path`` (no
test reads the real DeepLoc or Fashion-MNIST data), a 20-example softmax regression, and one-
or two-step budgets. Most cases fail at validation, before anything is compiled.
"""

from __future__ import annotations

import csv
import errno
import gc
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro import handlers

import mtbkd_jax as mk
import mtbkd_jax._paths as paths_module
import mtbkd_jax.infer.checkpoint as checkpoint_module
from mtbkd_jax.datasets.deeploc import DEEPLOC_CLASS_NAMES, DEEPLOC_FILES, load_deeploc
from mtbkd_jax.datasets.fashion_mnist import (
    FashionMNISTSplit,
    load_fashion_mnist,
    load_fashion_mnist_distillation,
)
from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings, fashion_mnist_teachers
from mtbkd_jax.datasets.synthetic import make_synthetic
from mtbkd_jax.experiments import run_experiment
from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._loop import EpochLoop
from mtbkd_jax.infer._svi_runners import _weak_model
from mtbkd_jax.infer.checkpoint import Checkpoint, CheckpointError
from mtbkd_jax.infer.fingerprint import RunFingerprint
from mtbkd_jax.infer.gradients import GradientEstimator
from mtbkd_jax.infer.likelihood import pointwise_log_likelihood
from mtbkd_jax.infer.minibatch import PlateSpec
from mtbkd_jax.infer.warm_start import reference_optimizer

N, F, C = 20, 3, 3
FAST = {"progress_bar": False}
SGMCMC = {"num_epochs": 1, "draws_per_epoch": 1, **FAST}
KEY = jax.random.key(0)


# --------------------------------------------------------------------------- tiny models
def full_batch_model(inputs, labels=None):
    """Softmax regression, full batch."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([inputs.shape[1], C]).to_event(2))
    with numpyro.plate("data", inputs.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=inputs @ w), obs=labels)


def minibatch_model(inputs, labels=None):
    """Softmax regression that subsamples its data plate (5 of N)."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([inputs.shape[1], C]).to_event(2))
    with numpyro.plate("data", inputs.shape[0], subsample_size=5) as index:
        batch = jnp.take(inputs, index, axis=0)
        numpyro.sample("y", dist.Categorical(logits=batch @ w), obs=jnp.take(labels, index))


def two_plate_model(inputs, labels=None):
    """Two subsampled plates: the data and a second one with a factor."""
    minibatch_model(inputs, labels)
    v = numpyro.sample("v", dist.Normal(0.0, 1.0).expand([inputs.shape[1]]).to_event(1))
    with numpyro.plate("other", inputs.shape[0], subsample_size=4) as index:
        numpyro.factor("extra", -jnp.square(jnp.take(inputs, index, axis=0) @ v))


def no_latent_model(inputs, labels=None):
    """Observed sites only: nothing to sample."""
    with numpyro.plate("data", inputs.shape[0]):
        numpyro.sample("y", dist.Categorical(logits=inputs), obs=labels)


def no_observed_model(inputs, labels=None):
    """Latent sites only: no likelihood."""
    numpyro.sample("w", dist.Normal(0.0, 1.0).expand([inputs.shape[1], C]).to_event(2))


class RuntimeErrorAfterFirstTrace:
    """A user's own model whose trace for reading its structure works and whose later calls
    raise a ``RuntimeError`` of its own (not NumPyro's "Cannot find valid initial
    parameters"), which the front-ends must pass on unchanged."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def __call__(self, inputs, labels=None):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("the model's own failure on call 2")
        return self.model(inputs, labels)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, F)).astype(np.float32)
    y = rng.integers(0, C, size=N).astype(np.int32)
    return x, y


def _posterior(**kwargs):
    draws = {"w": np.zeros((1, 2, F, C), np.float32)}
    return mk.Posterior(draws=draws, method="test", **kwargs)


def _logits_fn(weights, x):
    return x @ weights["w"]


# --------------------------------------------------------------------------- _checks
def test_a_number_check_refuses_a_list():
    """``_checks._as_number``: ``float()`` fails on a list (``_checks.py:42``)."""
    bank = mk.TeacherBank.from_logits(np.zeros((2, 4, C)))
    with pytest.raises(
        TypeError, match=r"temperature must be a number, got \[1\.0, 2\.0\] \(list\)"
    ):
        bank.probs(temperature=[1.0, 2.0])


def test_a_nonnegative_values_check_refuses_a_non_number():
    """``require_nonnegative_values``: NumPy cannot make a float array of it (``:99``)."""
    probs = jnp.full((2, 4, C), 1.0 / C)
    with pytest.raises(TypeError, match=r"concentration must be a number, got object"):
        mk.priors.TeacherMixtureDirichlet(probs, jnp.full((2, 4), 0.5), concentration=object())


# --------------------------------------------------------------------------- _paths
def test_a_path_with_a_nul_byte_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"path must be a folder path, got .*holds a NUL byte"):
        _posterior().save(str(tmp_path / "a\x00b.nc"))


def test_an_output_folder_whose_name_is_too_long_is_a_value_error(tmp_path):
    too_long = tmp_path / ("a" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))
    with pytest.raises(ValueError, match=r"out_dir must be a writable folder, got .*cannot be "):
        run_experiment("digits", too_long, say=lambda *_: None)
    with pytest.raises(ValueError, match=os.strerror(errno.ENAMETOOLONG)):
        run_experiment("digits", too_long, say=lambda *_: None)


def test_an_unreadable_input_folder_is_a_permission_error(tmp_path, monkeypatch):
    """Tests run as root, where ``os.access`` says every folder is readable: the check is
    reached by making ``os.access`` answer as it would for another user on a mode-000 folder."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setattr(paths_module.os, "access", lambda path, mode: False)
    with pytest.raises(
        PermissionError, match=r"data_path must be a readable folder, got .*which cannot be read"
    ):
        run_experiment("deeploc", tmp_path / "out", data_path=data_dir, say=lambda *_: None)


# --------------------------------------------------------------------------- DeepLoc reader
_HEADER = ["ACC", "Kingdom", "Partition", "Membrane", *DEEPLOC_CLASS_NAMES, "Sequence", "Label"]


def _write_proteins(file, num, *, columns=_HEADER, label=None):
    with open(file, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(num):
            cls = i % len(DEEPLOC_CLASS_NAMES) if label is None else label
            row = {
                "ACC": f"P{i:05d}",
                "Kingdom": "Metazoa",
                "Partition": "0",
                "Membrane": "0",
                "Sequence": "MKTAYIAKQRQISFVKSHFSRQ"[: 10 + i % 10],
                "Label": str(cls),
                **{n: str(int(k == cls)) for k, n in enumerate(DEEPLOC_CLASS_NAMES)},
            }
            writer.writerow([row[c] for c in columns])


def _write_logits(file, num, header, width=10):
    rows = np.zeros((num, width))
    np.savetxt(
        file,
        rows,
        delimiter=",",
        header=",".join(map(str, range(width))) if header else "",
        comments="",
    )


def _deeploc_folder(folder, num_train=6, num_test=3, num_multi=2):
    """A complete fake DeepLoc folder, in the files' real formats (see the data README)."""
    _write_proteins(folder / "data_our_train_sample.csv", num_train)
    _write_proteins(folder / "data_our_test.csv", num_test)
    _write_proteins(folder / "data_MuLabel_sub.csv", num_multi)
    for name in ("ESM_650M_probs_sample.csv", "T5_probs_sample.csv"):
        _write_logits(folder / name, num_train, header=True)
    for name in ("ESM_650M_probs_test.csv", "T5_probs_test.csv"):
        _write_logits(folder / name, num_test, header=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(DEEPLOC_FILES)
    return folder


def test_the_fake_deeploc_folder_loads(tmp_path):
    """The fake folder the error cases below start from is itself valid."""
    data = load_deeploc(_deeploc_folder(tmp_path), validation_size=2)
    assert (data.train.num_examples, data.validation.num_examples) == (4, 2)
    assert data.test.num_examples == 3


def _no_proteins(folder):
    _write_proteins(folder / "data_our_test.csv", 0)


def _missing_columns(folder):
    columns = [c for c in _HEADER if c not in ("Label", "Nucleus")]
    _write_proteins(folder / "data_our_train_sample.csv", 6, columns=columns)


def _label_out_of_range(folder):
    _write_proteins(folder / "data_MuLabel_sub.csv", 2, label=len(DEEPLOC_CLASS_NAMES))


def _logits_rows(folder):
    _write_logits(folder / "T5_probs_test.csv", 2, header=False)


def _logits_columns(folder):
    _write_logits(folder / "ESM_650M_probs_sample.csv", 6, header=True, width=9)


@pytest.mark.parametrize(
    ("spoil", "kwargs", "pattern"),
    [
        (_no_proteins, {}, r"data_our_test\.csv holds no proteins"),
        (
            _missing_columns,
            {},
            r"data_our_train_sample\.csv lacks the columns \['Label', 'Nucleus'\]",
        ),
        (_label_out_of_range, {}, r"data_MuLabel_sub\.csv: Label outside 0\.\.9"),
        (
            _logits_rows,
            {},
            r"T5_probs_test\.csv: expected 3 rows of 10 logits .*got shape \(2, 10\)",
        ),
        (
            _logits_columns,
            {},
            r"ESM_650M_probs_sample\.csv: expected 6 rows of 10 logits .*got shape \(6, 9\)",
        ),
        (None, {"validation_size": 0}, r"validation_size must be an integer >= 1, got 0"),
        (None, {"validation_size": 6}, r"validation_size must lie in 1\.\.5, got 6"),
    ],
    ids=[
        "no-proteins",
        "missing-columns",
        "label-out-of-range",
        "logits-rows",
        "logits-columns",
        "validation-size-0",
        "validation-size-all",
    ],
)
def test_deeploc_reader_errors_name_the_file_or_argument(tmp_path, spoil, kwargs, pattern):
    folder = _deeploc_folder(tmp_path)
    if spoil is not None:
        spoil(folder)
    kwargs = {"validation_size": 2, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        load_deeploc(folder, **kwargs)


# --------------------------------------------------------------------------- Fashion-MNIST
def _write_idx(file, array):
    """An uncompressed IDX file (the MNIST format: magic 0 0 dtype ndim, big-endian sizes)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    array = np.asarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    file.write_bytes(header + array.tobytes())


def _fashion_folder(folder, *, train=4, test=2, side=28, train_labels=None):
    rng = np.random.default_rng(0)
    for split, num in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(num, side, side), dtype=np.uint8)
        labels = np.arange(num, dtype=np.uint8) % 10
        if split == "train" and train_labels is not None:
            labels = np.asarray(train_labels)
        _write_idx(folder / f"{split}-images-idx3-ubyte", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", labels)
    return folder


def test_the_fake_fashion_mnist_folder_loads(tmp_path):
    split = load_fashion_mnist(_fashion_folder(tmp_path), "test")
    assert split.images.shape == (2, 28, 28)
    np.testing.assert_array_equal(split.labels, [0, 1])


def test_fashion_mnist_unknown_split():
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), got 'val'"):
        load_fashion_mnist(None, "val")


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"side": 14}, r"expected images \(N, 28, 28\) and labels \(N,\), got \(4, 14, 14\)"),
        (
            {"train_labels": np.arange(3, dtype=np.uint8)},
            r"expected images \(N, 28, 28\) and labels \(N,\), got \(4, 28, 28\) and \(3,\)",
        ),
        (
            {"train_labels": np.array([0, 1, 2, 10], np.uint8)},
            r"labels must lie in 0\.\.9, got 0\.\.10",
        ),
        (
            {"train_labels": np.array([0, -1, 2, 3], np.int8)},
            r"labels must lie in 0\.\.9, got -1\.\.3",
        ),
    ],
    ids=["images-14x14", "labels-count", "label-10", "label-negative"],
)
def test_fashion_mnist_bad_files_name_the_folder(tmp_path, files, pattern):
    folder = _fashion_folder(tmp_path, **files)
    with pytest.raises(ValueError, match=str(tmp_path.resolve()) + ".*" + pattern):
        load_fashion_mnist(folder, "train")


@pytest.mark.parametrize(
    ("counts", "got"),
    [
        ({"num_labelled": 0, "num_transfer": 1}, r"num_labelled must be an integer >= 1, got 0"),
        ({"num_labelled": 1, "num_transfer": 0}, r"num_transfer must be an integer >= 1, got 0"),
        ({"num_labelled": 1, "num_transfer": 1, "num_validation": -1},
         r"num_validation must be an integer >= 0, got -1"),
        ({"num_labelled": 2, "num_transfer": 2, "num_validation": 1},
         r"num_labelled and num_transfer must be >= 1, num_validation >= 0, and together at most "
         r"4 \(the training images\), got 2, 2 and 1"),
    ],
    ids=["no-labelled", "no-transfer", "negative-validation", "more-than-the-pool"],
)  # fmt: skip
def test_fashion_mnist_distillation_counts(tmp_path, counts, got):
    folder = _fashion_folder(tmp_path, train=6)
    settings = TeacherSettings(num_train=4, num_test=1)
    with pytest.raises(ValueError, match=got):
        load_fashion_mnist_distillation(
            folder, teacher_settings=settings, cache_dir=False, **counts
        )


def test_fashion_mnist_teachers_need_a_full_batch():
    images = np.zeros((3, 28, 28), np.float32)
    split = FashionMNISTSplit(images, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"need at least batch_size=128 images, got 3"):
        fashion_mnist_teachers(split, split, settings=TeacherSettings(), cache_dir=False)


# --------------------------------------------------------------------------- synthetic, experiments
@pytest.mark.parametrize(
    ("target", "range_pattern"),
    [(1.0 - 1e-12, r"0\.500\.\.(0\.9|1\.000)"), (0.5 + 1e-12, r"0\.500\.\.")],
    ids=["just-below-1", "just-above-1/C"],
)
def test_synthetic_bayes_accuracy_out_of_the_scalings_reach(target, range_pattern):
    with pytest.raises(
        ValueError,
        match=rf"bayes_accuracy={target} cannot be reached by scaling this generator's logits "
        rf"\(range {range_pattern}",
    ):
        make_synthetic("linear", 2, num_examples=11, bayes_accuracy=target)


def test_run_experiment_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of \('digits', .*got 'mnist'"):
        run_experiment("mnist", tmp_path, say=lambda *_: None)
    assert not any(tmp_path.iterdir())  # refused before anything is written


# --------------------------------------------------------------------------- inference inputs
def test_inputs_that_cannot_become_an_array(data):
    _, y = data
    ragged = [[0.0, 1.0, 2.0]] * (N - 1) + [[0.0]]
    with pytest.raises(TypeError, match=r"inputs must be an array, got list"):
        mk.run_map(KEY, full_batch_model, ragged, y, num_steps=1, **FAST)


@pytest.mark.parametrize(
    ("init_params", "pattern"),
    [
        (3, r"init_params must be a dict of site -> array, got int"),
        (np.zeros((F, C)), r"init_params must be a dict of site -> array, got ndarray"),
        (
            [{"w": np.zeros((F, C))}, "w"],
            r"init_params\[1\] must be a dict of site -> array, got str",
        ),
    ],
    ids=["int", "array", "list-of-one-string"],
)
def test_nuts_init_params_not_a_dict(data, init_params, pattern):
    x, y = data
    with pytest.raises(TypeError, match=pattern):
        mk.run_nuts(
            KEY,
            full_batch_model,
            x,
            y,
            init_params=init_params,
            num_warmup=1,
            num_draws=1,
            num_chains=2,
            chain_method="sequential",
            **FAST,
        )


def test_sgmcmc_init_params_not_a_dict(data):
    x, y = data
    with pytest.raises(TypeError, match=r"init_params must be a dict of site -> array, got int"):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, init_params=3, **SGMCMC)
    first_not_a_dict = r"init_params\[0\] must be a dict of site -> array, got int"
    with pytest.raises(TypeError, match=first_not_a_dict):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, init_params=(1, 2), **SGMCMC)


def test_sgmcmc_needs_one_start_per_chain(data):
    x, y = data
    start = {"w": np.zeros((F, C), np.float32)}
    with pytest.raises(ValueError, match=r"init_params holds 3 starting points for num_chains=2"):
        mk.run_sgmcmc(
            KEY, minibatch_model, x, y, init_params=[start] * 3, **{**SGMCMC, "num_chains": 2}
        )


# --------------------------------------------------------------------------- minibatch internals
@pytest.mark.parametrize("batch_size", [0, -1, 11])
def test_plate_spec_batch_size_out_of_range(batch_size):
    with pytest.raises(
        ValueError, match=rf"batch size of plate 'data' must lie in 1\.\.10, got {batch_size}"
    ):
        PlateSpec("data", 10, batch_size)


def test_minibatch_potential_needs_a_plate(data):
    with pytest.raises(ValueError, match=r"plates must name at least one subsampled plate"):
        GradientEstimator(minibatch_model, data, {}, plates=())


def test_epoch_runner_partial_last_batch_with_two_plates():
    """Not reachable through ``run_sgmcmc``, whose minibatch plan refuses first (below)."""
    plates = [PlateSpec("data", 10, 3), PlateSpec("other", 10, 3)]
    with pytest.raises(
        ValueError,
        match=r"partial_last_batch needs a model with one subsampled plate, got "
        r"\['data', 'other'\]",
    ):
        EpochLoop(plates, steps_per_epoch=4, partial_last_batch=True)


@pytest.mark.parametrize(
    ("batch_size", "steps", "partial", "expected"),
    [(5, 3, False, 2), (3, 4, False, 3), (3, 3, True, 4)],
    ids=["even", "floor", "ceil-with-partial"],
)
def test_epoch_runner_steps_per_epoch_must_match(batch_size, steps, partial, expected):
    plates = [PlateSpec("data", 10, batch_size)]
    with pytest.raises(ValueError, match=rf"steps_per_epoch must be {expected}, got {steps}"):
        EpochLoop(plates, steps_per_epoch=steps, partial_last_batch=partial)


def test_sgmcmc_partial_last_batch_with_two_plates(data):
    x, y = data
    with pytest.raises(
        ValueError,
        match=r"partial_last_batch needs a model with one subsampled plate, got "
        r"\['data', 'other'\]",
    ):
        mk.run_sgmcmc(KEY, two_plate_model, x, y, partial_last_batch=True, **SGMCMC)


def test_sgmcmc_predict_inputs_need_logits_fn(data):
    x, y = data
    with pytest.raises(ValueError, match=r"predict_inputs needs logits_fn \(or an MTBKDModel\)"):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, predict_inputs=x, **SGMCMC)
    # a logits_fn that is not a function is named (it failed inside the first chunk before)
    with pytest.raises(TypeError, match="logits_fn must be a function.*got int"):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, predict_inputs=x, logits_fn=3, **SGMCMC)


def test_cyclical_exploration_fraction_below_one():
    for fraction in (1.0, 2.5):
        with pytest.raises(
            ValueError, match=rf"exploration_fraction must lie in \[0, 1\), got {fraction}"
        ):
            schedules.cyclical_exploration(10, fraction)


@pytest.mark.parametrize(
    ("num_examples", "error"),
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ("100", TypeError)],
)
def test_reference_optimizer_needs_a_positive_integer(num_examples, error):
    with pytest.raises(error, match=rf"num_examples must be an integer >= 1, got {num_examples!r}"):
        reference_optimizer(num_examples)


# --------------------------------------------------------------------------- checkpoints
def _fingerprint():
    return RunFingerprint({"seed": 0}, {})


def test_checkpoint_with_other_state_shapes(tmp_path):
    """The fingerprint holds the model's latent shapes, so a run with another model stops at
    the fingerprint check; a state of other shapes is reached only by ``Checkpoint`` itself."""
    path = tmp_path / "run.ckpt.npz"
    Checkpoint(path, _fingerprint()).save(
        {"position": np.zeros(4, np.float32)}, {"w": np.zeros((1, 2, 3), np.float32)}, {}
    )
    with pytest.raises(CheckpointError, match=r"run\.ckpt\.npz.*its state has other shapes"):
        Checkpoint(path, _fingerprint()).load(like_state={"position": np.zeros(5, np.float32)})


@pytest.mark.parametrize(
    "meta",
    [{"format": "another program's checkpoint", "version": 3, "num_leaves": 0}, {"version": 3}],
    ids=["other-format", "no-format"],
)
def test_an_npz_of_another_format_is_refused_before_any_compute(tmp_path, data, meta):
    """An ``.npz`` with a ``meta`` entry of another format, given as ``checkpoint_path``: refused
    by name, as not a checkpoint (not as an unreadable file: the CheckpointError passes the
    re-raise at ``checkpoint.py:128`` unchanged)."""
    x, y = data
    path = tmp_path / "other.npz"
    np.savez(path, meta=np.asarray(json.dumps(meta)))
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint '.*other\.npz' cannot be resumed: it is not a mtbkd_jax checkpoint",
    ) as error:
        mk.run_sgmcmc(KEY, minibatch_model, x, y, checkpoint_path=path, **SGMCMC)
    # a file of the user's own (a mistyped path) is not to be deleted, as the message had said
    assert "Delete it" not in str(error.value) and "Nothing was written to it" in str(error.value)


@pytest.mark.parametrize("version", [2, 4])
def test_a_checkpoint_of_another_format_version_is_refused(tmp_path, data, monkeypatch, version):
    """A checkpoint written by a version of the package with another format version (written
    here by the checkpoint writer itself, its format version patched)."""
    x, y = data
    path = tmp_path / "run.ckpt"
    current = checkpoint_module._VERSION
    monkeypatch.setattr(checkpoint_module, "_VERSION", version)
    Checkpoint(path, _fingerprint()).save({"position": np.zeros(4, np.float32)}, {}, {})
    monkeypatch.setattr(checkpoint_module, "_VERSION", current)
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint '.*run\.ckpt' cannot be resumed: it was written in format version "
        rf"{version}, this version reads {current}",
    ):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, checkpoint_path=path, **SGMCMC)


def test_checkpoint_chunk_with_other_sites(tmp_path):
    checkpoint = Checkpoint(tmp_path / "run.ckpt.npz", _fingerprint())
    state = {"position": np.zeros(4, np.float32)}
    checkpoint.save(state, {"w": np.zeros((1, 2, 3), np.float32)}, {"next_epoch": 1})
    with pytest.raises(
        CheckpointError, match=r"chunk holds the sites \[\['v', .*the run's draws are \[\['w'"
    ):
        checkpoint.save(state, {"v": np.zeros((1, 2, 3), np.float32)}, {"next_epoch": 2})
    with pytest.raises(CheckpointError, match=r"chunk holds the sites .*\[1, -1, 4\]\]\], the"):
        checkpoint.save(state, {"w": np.zeros((1, 2, 4), np.float32)}, {"next_epoch": 2})


# --------------------------------------------------------------------------- likelihood, NUTS
def test_pointwise_log_likelihood_needs_an_observed_site(data):
    x, y = data
    draws = {"w": np.zeros((2, F, C), np.float32)}
    with pytest.raises(ValueError, match=r"the model has no observed sample site \(obs=\.\.\.\)"):
        pointwise_log_likelihood(no_observed_model, draws, (x, y))


def test_pointwise_log_likelihood_needs_every_latent_site(data):
    x, y = data
    with pytest.raises(
        ValueError, match=r"draws has no values for the model's latent sites \['w'\]"
    ):
        pointwise_log_likelihood(full_batch_model, {"v": np.zeros((2, F))}, (x, y))


def test_nuts_needs_a_latent_site(data):
    x, y = data
    with pytest.raises(ValueError, match=r"the model has no latent sample site to sample"):
        mk.run_nuts(KEY, no_latent_model, x, y, num_warmup=1, num_draws=1, num_chains=1, **FAST)


def test_nuts_passes_on_a_models_own_runtime_error(data):
    """``nuts.py:147``: only NumPyro's "Cannot find valid initial parameters" is translated."""
    x, y = data
    model = RuntimeErrorAfterFirstTrace(full_batch_model)
    with pytest.raises(RuntimeError, match=r"the model's own failure on call 2"):
        mk.run_nuts(KEY, model, x, y, num_warmup=1, num_draws=1, num_chains=1, **FAST)


def test_sgmcmc_passes_on_a_models_own_runtime_error(data):
    """``_start.py:32``: the same when SG-MCMC looks for its chains' starting points."""
    x, y = data
    model = RuntimeErrorAfterFirstTrace(minibatch_model)
    with pytest.raises(RuntimeError, match=r"the model's own failure on call 2"):
        mk.run_sgmcmc(KEY, model, x, y, **SGMCMC)


# --------------------------------------------------------------------------- Posterior
def test_posterior_site_name_with_a_slash():
    with pytest.raises(ValueError, match=r"site name 'layer/w' contains '/'"):
        mk.Posterior(draws={"layer/w": np.zeros((1, 2, 3))})


@pytest.mark.parametrize("draw_batch_size", [2.0, "8", None, True])
def test_posterior_draw_batch_size_not_an_int(data, draw_batch_size):
    x, _ = data
    posterior = _posterior(logits_fn=_logits_fn)
    with pytest.raises(
        TypeError, match=rf"draw_batch_size must be an integer, got {draw_batch_size!r}"
    ):
        posterior.predict(x, draw_batch_size=draw_batch_size)


def test_posterior_with_a_model_but_no_training_data():
    posterior = _posterior(model=full_batch_model)
    with pytest.raises(ValueError, match=r"holds no training data; pass inputs and labels"):
        posterior.log_likelihood()


@pytest.mark.parametrize("path", [3, None, 2.5, object()], ids=["int", "none", "float", "object"])
def test_posterior_load_path_not_a_path(path):
    with pytest.raises(TypeError, match=rf"path must be a path, got {type(path).__name__}"):
        mk.Posterior.load(path)


def test_posterior_predict_inputs_that_cannot_become_an_array():
    posterior = _posterior(logits_fn=_logits_fn)
    ragged = [[0.0, 1.0, 2.0], [0.0]]
    with pytest.raises(TypeError, match=r"inputs must be an array, got list"):
        posterior.predict(ragged)


# --------------------------------------------------------------------------- SVI
def test_svi_loss_becoming_non_finite_says_at_which_step(data):
    """A learning rate of 1e30 throws the weights to ~1e30 after one Adam step, where the
    Normal prior's log density overflows float32."""
    x, y = data
    with pytest.raises(
        FloatingPointError,
        match=r"SVI loss became non-finite at step [1-9]\d*; lower learning_rate",
    ):
        mk.run_map(KEY, full_batch_model, x, y, num_steps=3, learning_rate=1e30, **FAST)


def test_a_cached_svi_runner_whose_model_is_gone():
    """``svi.py:62`` is unreachable through ``run_svi``: the caller holds the model for the
    whole fit, and a finaliser drops the cached runners once the model is collected. The
    weak wrapper itself raises a ReferenceError naming what is gone."""

    def model(inputs, labels=None):
        return None

    weak = _weak_model(model)
    assert weak(1) is None
    del model
    gc.collect()
    with pytest.raises(ReferenceError, match=r"the model of a cached SVI runner no longer exists"):
        weak(1)


# --------------------------------------------------------------------------- model, students
@pytest.fixture(scope="module")
def student():
    return mk.Student(mk.MLP(F, C, hidden=(2,), rngs=nnx.Rngs(0)))


def test_model_prior_constants_of_the_wrong_type(data, student):
    x, y = data
    bank = mk.TeacherBank.from_logits(np.zeros((2, N, C)))
    model = mk.MTBKDModel(student, bank)
    with pytest.raises(TypeError, match=r"prior_constants must be a TeacherPrior, got ndarray"):
        with handlers.seed(rng_seed=0):
            model(jnp.asarray(x), jnp.asarray(y), prior_constants=np.zeros((N, 2, C)))
    with pytest.raises(TypeError, match=r"prior_constants must be a TeacherPrior, got TeacherBank"):
        with handlers.seed(rng_seed=0):
            model(jnp.asarray(x), jnp.asarray(y), prior_constants=bank)


def test_linen_parameter_shapes_need_feature_shape():
    linen_student = mk.Student(mk.students.LinenMLP(C, hidden=(2,)))
    with pytest.raises(ValueError, match=r"feature_shape is needed for a linen module"):
        linen_student.parameter_shapes()
    with pytest.raises(ValueError, match=r"feature_shape is needed for a linen module"):
        linen_student.parameter_names()
    assert linen_student.parameter_shapes((F,))["Dense_0.kernel"] == (F, 2)


class _ThreeDimensionalLogits(nnx.Module):
    def __init__(self, *, rngs):
        self.out = nnx.Linear(F, C, rngs=rngs)

    def __call__(self, x):
        return self.out(x)[..., None]


class _OneDimensionalLogits(nnx.Module):
    def __init__(self, *, rngs):
        self.out = nnx.Linear(F, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(x)[:, 0]


@pytest.mark.parametrize(
    ("network", "shape"),
    [(_ThreeDimensionalLogits, r"\(1, 3, 1\)"), (_OneDimensionalLogits, r"\(1,\)")],
    ids=["3-d", "1-d"],
)
def test_a_network_whose_logits_are_not_n_by_c(data, network, shape):
    x, _ = data
    odd = mk.Student(network(rngs=nnx.Rngs(0)))
    with pytest.raises(
        ValueError,
        match=rf"the student network must return logits of shape \(N, C\), got {shape} "
        rf"for my_inputs of shape \(1, {F}\)",
    ):
        odd.check_inputs(x, "my_inputs")


def test_from_callables_with_zero_inputs():
    with pytest.raises(
        ValueError, match=r"inputs must have at least one example, got shape \(0, 3\)"
    ):
        mk.TeacherBank.from_callables([jnp.tanh], np.zeros((0, F)))
    with pytest.raises(ValueError, match=r"inputs must have at least one example, got shape \(\)"):
        mk.TeacherBank.from_callables([jnp.tanh], 1.0)


@pytest.mark.parametrize(
    ("teachers", "pattern"),
    [
        (1, r"teachers must be a list of teacher names or indices, got int"),
        ({0, 1}, r"teachers must be a list of teacher names or indices, got set"),
        (None, r"teachers must be a list of teacher names or indices, got NoneType"),
        ([0, 1.0], r"teachers must hold teacher names \(str\) or indices \(int\), got 1\.0"),
        ([True], r"teachers must hold teacher names \(str\) or indices \(int\), got True"),
        ([["a"]], r"teachers must hold teacher names \(str\) or indices \(int\), got \['a'\]"),
    ],
    ids=["int", "set", "none", "float-index", "bool-index", "nested-list"],
)
def test_bank_select_of_the_wrong_type(teachers, pattern):
    bank = mk.TeacherBank.from_logits(np.zeros((2, 4, C)), names=["a", "b"])
    with pytest.raises(TypeError, match=pattern):
        bank.select(teachers)


# --------------------------------------------------------------------------- audit 22: 11, 12, keys
def _own_model(student, prior):
    """The README's own-model recipe: a student and a teacher prior in one data plate."""

    def model(inputs, labels=None):
        network = student.network(inputs.shape[1:])
        with numpyro.plate("data", inputs.shape[0]) as idx:
            logits = network(inputs[idx])
            numpyro.sample("y", dist.Categorical(logits=logits), obs=labels)
            mk.teacher_prior_factor("teacher_prior", logits, prior.take(idx), prior_power=0.1)

    return model


@pytest.mark.filterwarnings("ignore:.*Out-of-support values:UserWarning")
@pytest.mark.parametrize("guide", ["delta", "normal"])
def test_svi_that_cannot_start_names_the_sites_as_nuts_does(data, student, guide):
    """Finding 11: with a label out of range, ``run_map`` / ``run_svi`` gave NumPyro's bare
    "Cannot find valid initial parameters"; they now name the site, as ``run_nuts`` does."""
    x, y = data
    bank = mk.TeacherBank.from_logits(np.random.default_rng(1).normal(size=(2, N, C)))
    model = _own_model(student, mk.TeacherPrior.build(bank, concentration=10.0))
    bad = y.copy()
    bad[4] = C
    with pytest.raises(
        ValueError,
        match=r"SVI found no starting point with a finite log density: at all weights zero "
        r"the log density of \['y'\] is not finite\. Check the model's data and priors",
    ):
        mk.run_svi(KEY, model, x, bad, guide=guide, num_steps=2, num_draws=1, **FAST)


def test_svi_passes_on_a_models_own_runtime_error(data):
    """Only NumPyro's "Cannot find valid initial parameters" is translated."""
    x, y = data
    model = RuntimeErrorAfterFirstTrace(full_batch_model)
    with pytest.raises(RuntimeError, match=r"the model's own failure on call 2"):
        mk.run_map(KEY, model, x, y, num_steps=2, **FAST)


@pytest.mark.parametrize(
    ("schedule", "pattern"),
    [
        (
            lambda t: -1e-3 + 0 * t,
            r"step_size \(a schedule\) at step 0 must be a finite number >= 0, got -0\.001",
        ),
        (
            lambda t: jnp.full(3, 1e-5),
            r"step_size \(a schedule\) at step 0 must return a scalar, got shape \(3,\)",
        ),
        (
            lambda t: jnp.where(t >= 3, jnp.nan, 1e-3),
            r"step_size \(a schedule\) at step 3 must be a finite number >= 0, got nan",
        ),
        (
            lambda t: 0.0 * t,
            r"step_size \(a schedule\) is 0 at every step checked \(\[0, 1, 2, 3\]\)",
        ),
        (lambda t: "1e-3", r"step_size \(a schedule\) at step 0 must be a number, got '1e-3'"),
    ],
    ids=["negative", "array", "nan-at-the-last-step", "zero-everywhere", "string"],
)
def test_sgmcmc_step_size_schedule_is_checked_at_a_few_steps(data, schedule, pattern):
    """Finding 12: a schedule's values were not checked; a negative one was blamed on the step
    size ("lower step_size") and an array failed deep in the kernel. (4 steps: 20 examples,
    batches of 5, one epoch.)"""
    x, y = data
    error = TypeError if isinstance(schedule(0), str) else ValueError
    with pytest.raises(error, match=pattern):
        mk.run_sgmcmc(KEY, minibatch_model, x, y, step_size=schedule, **SGMCMC)


@pytest.mark.parametrize("sampler", ["sgld", "cyclical_sgld"])
def test_the_package_schedules_pass_the_check(sampler):
    import optax

    from mtbkd_jax.infer._plan import step_schedules

    for schedule, total in (
        (schedules.constant(1e-3), 1000),
        (schedules.polynomial_decay(1e-3, 1.0, 0.55), 1000),
        (schedules.cyclical(1e-3, 10), 1000),
        (schedules.cyclical(1e-3, 20_000), 40_000),  # float32 rounds its last step to 0
        (optax.linear_schedule(0.0, 1e-3, 100), 1000),  # a warm-up from 0
    ):
        got, _, _ = step_schedules(sampler, schedule, total, 2, 0.25)
        assert got is schedule


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        (jax.random.split(KEY, 2), r"got a typed key array of shape \(2,\)"),
        (
            jax.random.split(jax.random.PRNGKey(0), 2),
            r"got a raw uint32 key array of shape \(2, 2\)",
        ),
        (np.zeros(3, np.uint32), r"got a raw uint32 key array of shape \(3,\)"),
    ],
    ids=["typed-batch", "raw-batch", "raw-of-three"],
)
@pytest.mark.parametrize("front_end", ["run_map", "run_sgmcmc", "run_nuts"])
def test_a_batch_of_keys_is_refused_naming_rng_key(data, key, pattern, front_end):
    """A batch of keys passed ``require_key`` and failed in ``jax.random.split``; a raw key
    of shape (3,) failed with JAX's "invalid PRNG key data"."""
    x, y = data
    run = {
        "run_map": lambda: mk.run_map(key, full_batch_model, x, y, num_steps=1, **FAST),
        "run_sgmcmc": lambda: mk.run_sgmcmc(key, minibatch_model, x, y, **SGMCMC),
        "run_nuts": lambda: mk.run_nuts(
            key, full_batch_model, x, y, num_warmup=1, num_draws=1, **FAST
        ),
    }[front_end]
    with pytest.raises(ValueError, match=r"rng_key must be a single JAX PRNG key: .*" + pattern):
        run()


def test_a_single_raw_key_is_still_taken(data):
    x, y = data
    for key in (jax.random.PRNGKey(0), np.asarray(jax.random.PRNGKey(0))):
        posterior = mk.run_map(key, full_batch_model, x, y, num_steps=1, **FAST)
        assert posterior.num_draws == 1
