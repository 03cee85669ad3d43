"""Fashion-MNIST: the IDX reader, the teacher cache (on small fake files, always run) and the
loader and experiment on the real data (skipped when Debian's dataset-fashion-mnist is absent)."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from mtbkd_jax.cli import main
from mtbkd_jax.datasets.fashion_mnist import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_TEACHER_NAMES,
    fashion_mnist_available,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    load_fashion_mnist_distillation,
    read_idx,
)
from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings

needs_data = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST absent (apt-get install dataset-fashion-mnist)",
)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _fake_folder(folder, num_train=300, num_test=100, seed=0):
    """Tiny IDX files in the real layout: class c images are brighter in row band c."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", num_train), ("test", num_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4 : 2 * c + 7] += 180
        image_name, label_name = FASHION_MNIST_FILES[split]
        (folder / image_name).write_bytes(gzip.compress(_idx_bytes(images)))
        (folder / label_name).write_bytes(gzip.compress(_idx_bytes(labels)))
    return folder


def test_read_idx_plain_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(array))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short")
    # a download cut short, a file named .gz that is not, one with no examples: each named
    packed = gzip.compress(_idx_bytes(array))
    cases = {"cut-idx3-ubyte.gz": packed[:-12], "plain-idx3-ubyte.gz": _idx_bytes(array)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name} is truncated or not gzip-compressed"):
            read_idx(tmp_path / name)
    (tmp_path / "empty-idx3-ubyte").write_bytes(_idx_bytes(array[:0]))
    with pytest.raises(ValueError, match=r"empty-idx3-ubyte holds no examples"):
        read_idx(tmp_path / "empty-idx3-ubyte")


def test_missing_data_names_the_folder(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as error:
        find_fashion_mnist_dir(tmp_path)
    assert "dataset-fashion-mnist" in str(error.value)
    assert "train-images-idx3-ubyte.gz" in str(error.value)
    monkeypatch.setenv("MTBKD_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert not fashion_mnist_available()
    with pytest.raises(FileNotFoundError, match="MTBKD_FASHION_MNIST_DIR"):
        load_fashion_mnist()


def test_teachers_are_trained_once_then_loaded_from_the_cache(tmp_path):
    folder = _fake_folder(tmp_path / "data")
    settings = TeacherSettings(epochs={"cnn": 1, "mlp": 2, "logreg": 2}, batch_size=50)
    messages = []
    kwargs = dict(
        seed=1,
        num_labelled=40,
        num_transfer=100,
        teacher_settings=settings,
        cache_dir=tmp_path / "cache",
        say=messages.append,
    )
    data, teachers = load_fashion_mnist_distillation(folder, **kwargs)
    assert not teachers.info["cached"] and len(list((tmp_path / "cache").iterdir())) == 1
    assert data.x_train.shape == (40, 196) and data.x_transfer.shape == (100, 196)
    assert data.x_test.shape == (100, 196) and data.x_train.dtype == np.float32
    assert data.teachers_prior.names == FASHION_MNIST_TEACHER_NAMES
    assert data.teachers_prior.log_probs.shape == (3, 140, 10)
    assert data.teachers_test.log_probs.shape == (3, 100, 10)
    assert teachers.train_logits.shape == (3, 300, 10)
    # the fake classes are easy: the teachers learn them
    assert data.teachers_test.accuracy(data.y_test).max() > 0.5
    again, cached = load_fashion_mnist_distillation(folder, **kwargs)
    assert cached.info["cached"] and any("loaded from" in m for m in messages)
    np.testing.assert_array_equal(cached.test_logits, teachers.test_logits)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    # other settings are another cache entry
    other = TeacherSettings(epochs={"cnn": 1, "mlp": 1, "logreg": 1}, batch_size=50)
    _, retrained = load_fashion_mnist_distillation(folder, **{**kwargs, "teacher_settings": other})
    assert not retrained.info["cached"] and len(list((tmp_path / "cache").iterdir())) == 2
    # a broken cache file is named, with what to do (was numpy's advice to unpickle it)
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"the teachers' cache .*teachers-.*cannot be read.*delete"
    ):
        load_fashion_mnist_distillation(folder, **kwargs)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"downsample": 50}, ValueError, "downsample must be at most 28"),  # gave 0 features
        ({"downsample": 0}, ValueError, "downsample must be an integer >= 1"),  # ZeroDivision
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"num_labelled": 2.5}, TypeError, "num_labelled must be an integer"),  # a slice error
    ],
)
def test_loader_arguments_are_named(tmp_path, change, error, message):
    with pytest.raises(error, match=message):  # before any file is read
        load_fashion_mnist_distillation(tmp_path / "nowhere", **change)


def test_teachers_called_directly_never_load_another_data_sets_logits(tmp_path):
    """Without a data digest the cache was keyed by the settings alone: teachers for another
    data set of the same size were loaded from it. The splits' own digest keys it now."""
    from mtbkd_jax.datasets.fashion_mnist import FashionMNISTSplit
    from mtbkd_jax.datasets.fashion_mnist_teachers import fashion_mnist_teachers

    settings = TeacherSettings(epochs={"cnn": 1, "mlp": 1, "logreg": 1}, batch_size=50)
    rng = np.random.default_rng(0)

    def split(n):
        images = rng.uniform(size=(n, 28, 28)).astype(np.float32)
        return FashionMNISTSplit(images, rng.integers(0, 10, size=n).astype(np.int32))

    first, other = (split(60), split(20)), (split(60), split(20))
    options = dict(settings=settings, cache_dir=tmp_path, say=lambda *_: None)
    made = fashion_mnist_teachers(*first, **options)
    again = fashion_mnist_teachers(*first, **options)
    assert again.info["cached"] and np.array_equal(again.test_logits, made.test_logits)
    fresh = fashion_mnist_teachers(*other, **options)
    assert not fresh.info["cached"] and len(list(tmp_path.iterdir())) == 2


def test_held_out_images_are_not_trained_on_and_hold_the_students_images(tmp_path, monkeypatch):
    """With ``held_out=h`` the teachers train on the pool's first ``N - h`` images only, the
    student's labelled, transfer and validation images are drawn from the last ``h``, the
    cache key is another, and ``held_out=0`` keeps the key of before."""
    from mtbkd_jax.datasets import fashion_mnist_teachers as teachers_module

    folder = _fake_folder(tmp_path / "data")
    seen_sizes = []
    real_train = teachers_module._train

    def recording_train(module, images, labels, **kwargs):
        seen_sizes.append(len(images))
        return real_train(module, images, labels, **kwargs)

    monkeypatch.setattr(teachers_module, "_train", recording_train)
    base = TeacherSettings(epochs={"cnn": 1, "mlp": 1, "logreg": 1}, batch_size=50)
    held = replace(base, held_out=120)
    kwargs = dict(seed=1, num_labelled=40, num_transfer=60, num_validation=20, cache_dir=False)
    data, teachers = load_fashion_mnist_distillation(folder, teacher_settings=held, **kwargs)
    assert seen_sizes == [180, 180, 180]  # 300 images, the last 120 held out
    assert teachers.train_logits.shape == (3, 300, 10)  # every image predicted
    assert set(teachers.info["cnn"]) >= {"held_out_accuracy", "train_accuracy"}
    pool = _downsampled_training_images(folder)
    chosen = np.concatenate([data.x_train, data.x_transfer, data.x_validation])
    rows = [int(np.flatnonzero((pool == row).all(axis=1))[0]) for row in chosen]
    assert min(rows) >= 180 and len(set(rows)) == 120  # all 120 held-out images, no other
    assert held.key("d") != base.key("d")
    # held_out=0 keeps the cache key of the settings from before the field existed
    described = {k: v for k, v in asdict(base).items() if k != "held_out"}
    text = json.dumps({"settings": described, "data": "d", "v": 1}, sort_keys=True)
    assert base.key("d") == hashlib.sha256(text.encode()).hexdigest()[:16]
    with pytest.raises(ValueError, match=r"together at most 120 \(the held-out images\)"):
        load_fashion_mnist_distillation(
            folder, teacher_settings=held, **{**kwargs, "num_transfer": 61}
        )
    with pytest.raises(ValueError, match="held_out must lie in 0..299"):
        load_fashion_mnist_distillation(
            folder, teacher_settings=replace(base, held_out=300), **kwargs
        )


def _downsampled_training_images(folder):
    from mtbkd_jax.datasets.fashion_mnist import _downsample, load_fashion_mnist

    return _downsample(load_fashion_mnist(folder, "train").images, 2)


@pytest.mark.slow
def test_fashion_mnist_experiment_runs_on_small_fake_files(tmp_path):
    """The experiment's plumbing (config -> loader -> runner -> report) on fake IDX files, in
    its smoke setting with sizes the fake files hold."""
    from dataclasses import replace

    from mtbkd_jax.experiments.fashion_mnist import FashionMNISTConfig, run_fashion_mnist

    folder = _fake_folder(tmp_path / "data")
    teachers = TeacherSettings(epochs={"cnn": 1, "mlp": 1, "logreg": 1}, batch_size=50)
    config = replace(
        FashionMNISTConfig.smoke(seed=1),
        num_labelled=60,
        num_transfer=120,
        num_validation=40,
        teachers=teachers,
        map_steps=20,
        sgld_epochs=1,
        sgld_batch_size=20,  # 3 steps per epoch of the 60 labelled images, 2 draws
    )
    messages = []
    out = tmp_path / "out"
    rows = run_fashion_mnist(
        out, data_path=folder, cache_dir=tmp_path / "cache", say=messages.append, config=config
    )
    assert any("60 labelled, 120 transfer, 40 validation, 100 test images" in m for m in messages)
    assert any("student MLP 196-16-10" in m for m in messages)
    methods = {(r["method"], r["inference"]) for r in rows}
    assert {("teacher cnn", "teacher"), ("KD (mlp)", "map"), ("BKD (mlp)", "sgld")} <= methods
    assert ("MT-BKD (entropy weights)", "sgld") in methods
    written = json.loads((out / "metrics.json").read_text())
    assert [(r["method"], r["inference"]) for r in written] == [
        (r["method"], r["inference"]) for r in rows
    ]
    assert set(json.loads((out / "tuning.json").read_text())) == {
        m for m, inference in methods if inference == "map"
    }
    assert not json.loads((out / "teachers.json").read_text())["cached"]


@needs_data
def test_loader_shapes_and_dtypes():
    train, test = load_fashion_mnist(split="train"), load_fashion_mnist(split="test")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(split="validation")


@needs_data
@pytest.mark.slow
def test_fashion_mnist_experiment_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("MTBKD_FASHION_MNIST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["experiment", "fashion-mnist", "--smoke", "--out", str(out)]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    methods = {(r["method"], r["inference"]) for r in rows}
    assert {
        ("teacher cnn", "teacher"),
        ("student alone", "sgld"),
        ("KD (logreg)", "map"),
        ("BKD (mlp)", "sgld"),
        ("averaged KD", "map"),
        ("MT-BKD (uniform weights)", "sgld"),
        ("MT-BKD (entropy weights)", "sgld"),
    } <= methods
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["nll"] > 0
    info = json.loads((out / "teachers.json").read_text())
    assert not info["cached"] and set(FASHION_MNIST_TEACHER_NAMES) <= set(info)
    assert (out / "table.md").stat().st_size > 0
