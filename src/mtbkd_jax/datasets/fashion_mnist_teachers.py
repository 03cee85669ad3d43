"""The Fashion-MNIST teachers: a CNN, an MLP and a logistic regression, trained once with optax
on the training images; their logits on every training and test image are cached in an ``.npz``
named by a hash of the settings and of the data files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mtbkd_jax.datasets.fashion_mnist import (
    FASHION_MNIST_CACHE_ENV_VAR,
    FASHION_MNIST_TEACHER_NAMES,
    FashionMNISTSplit,
)

__all__ = ["FashionMNISTTeachers", "TeacherSettings", "fashion_mnist_teachers"]


# --------------------------------------------------------------------------- teachers
def _patches(x: jax.Array) -> jax.Array:
    """The 3x3 neighbourhoods of every pixel (SAME padding): (N, H, W, C) -> (N, H, W, 9C)."""
    return jax.lax.conv_general_dilated_patches(
        x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "OIHW", "NHWC")
    )


class _ConvTeacher(nnx.Module):
    """Conv(16) -> max-pool -> Conv(32) -> max-pool -> Dense(128) -> Dense(10), relu.

    The 3x3 convolutions are written as a matrix product on extracted patches, which XLA runs
    several times faster than its convolution's gradient on the CPU.
    """

    def __init__(
        self, channels: Sequence[int] = (16, 32), hidden: int = 128, *, rngs: nnx.Rngs
    ) -> None:
        self.conv1 = nnx.Linear(9, channels[0], rngs=rngs)
        self.conv2 = nnx.Linear(9 * channels[0], channels[1], rngs=rngs)
        self.dense = nnx.Linear(7 * 7 * channels[1], hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], 28, 28, 1))
        for conv in (self.conv1, self.conv2):
            x = jax.nn.relu(conv(_patches(x)))
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self.out(jax.nn.relu(self.dense(x.reshape((x.shape[0], -1)))))


class _MLPTeacher(nnx.Module):
    def __init__(self, hidden: int = 256, *, rngs: nnx.Rngs) -> None:
        self.hidden = nnx.Linear(784, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.hidden(x.reshape((x.shape[0], -1)))))


class _LogRegTeacher(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.out = nnx.Linear(784, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(x.reshape((x.shape[0], -1)))


@dataclass(frozen=True)
class TeacherSettings:
    """How the teachers are trained (part of the cache key).

    Attributes:
        epochs: training epochs per teacher (``cnn``, ``mlp``, ``logreg``).
        learning_rates: Adam learning rates per teacher.
        batch_size: minibatch size.
        num_train: training images the teachers see and the pool from which the student's
            labelled and transfer images are drawn (``None``: all 60,000).
        num_test: test images (``None``: all 10,000).
        seed: initialisation and shuffling.
        held_out: the last ``held_out`` images of the pool, which the teachers do not train
            on (they still predict them); the student's images are then drawn from these, so
            that the teachers' predictions on the student's labelled images are out of sample,
            as a trust learned from those labels needs (0: the teachers train on the whole
            pool, and their accuracy on the student's labelled images is training accuracy).
    """

    epochs: dict = field(default_factory=lambda: {"cnn": 4, "mlp": 8, "logreg": 4})
    learning_rates: dict = field(default_factory=lambda: {"cnn": 1e-3, "mlp": 1e-3, "logreg": 3e-3})
    batch_size: int = 128
    num_train: int | None = None
    num_test: int | None = None
    seed: int = 0
    held_out: int = 0

    @classmethod
    def smoke(cls) -> TeacherSettings:
        """Tiny settings for tests: 1 epoch on 1,200 images, 300 test images."""
        return cls(epochs={"cnn": 1, "mlp": 1, "logreg": 1}, num_train=1200, num_test=300)

    def key(self, data_digest: str) -> str:
        described = asdict(self)
        if not self.held_out:  # the key of the settings from before held_out existed
            del described["held_out"]
        text = json.dumps({"settings": described, "data": data_digest, "v": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _make_teacher(name: str, seed: int) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if name == "cnn":
        return _ConvTeacher(rngs=rngs)
    if name == "mlp":
        return _MLPTeacher(rngs=rngs)
    return _LogRegTeacher(rngs=rngs)


def _train(
    module: nnx.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> tuple[nnx.Module, list[float]]:
    """Adam on the cross-entropy, one jitted ``lax.scan`` per epoch; returns (module, losses)."""
    graphdef, params = nnx.split(module)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    num_steps = images.shape[0] // batch_size
    if num_steps < 1:
        raise ValueError(f"need at least batch_size={batch_size} images, got {images.shape[0]}")

    def loss_fn(p: nnx.State, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, p)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def epoch(
        p: nnx.State, state: Any, key: jax.Array, x: jax.Array, y: jax.Array
    ) -> tuple[nnx.State, Any, jax.Array]:
        order = jax.random.permutation(key, x.shape[0])[: num_steps * batch_size]

        def step(carry: tuple[nnx.State, Any], idx: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
            p, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (p, state), losses = jax.lax.scan(step, (p, state), order.reshape(num_steps, batch_size))
        return p, state, losses.mean()

    key = jax.random.key(seed)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    losses = []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        params, opt_state, loss = epoch(params, opt_state, sub, x, y)
        losses.append(float(loss))
    return nnx.merge(graphdef, params), losses


def _logits(module: nnx.Module, images: np.ndarray, batch_size: int = 2000) -> np.ndarray:
    graphdef, params = nnx.split(module)
    apply = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
    return np.concatenate(
        [
            np.asarray(apply(params, jnp.asarray(images[i : i + batch_size])))
            for i in range(0, images.shape[0], batch_size)
        ]
    ).astype(np.float32)


@dataclass(frozen=True, eq=False)
class FashionMNISTTeachers:
    """The teachers' logits on the (first ``num_train``) training and (``num_test``) test images.

    Attributes:
        names: teacher names (``cnn``, ``mlp``, ``logreg``).
        train_logits: (M, num_train, 10) float32.
        test_logits: (M, num_test, 10) float32.
        info: per teacher, training seconds, final training loss, train and test accuracy;
            plus the cache file and whether it was loaded from there (``cached``).
    """

    names: tuple[str, ...]
    train_logits: np.ndarray
    test_logits: np.ndarray
    info: dict


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(FASHION_MNIST_CACHE_ENV_VAR):
        return Path(os.environ[FASHION_MNIST_CACHE_ENV_VAR])
    return Path.home() / ".cache" / "mtbkd_jax" / "fashion-mnist"


def fashion_mnist_teachers(
    train: FashionMNISTSplit,
    test: FashionMNISTSplit,
    *,
    settings: TeacherSettings | None = None,
    data_digest: str = "",
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    say: Callable[..., object] = print,
) -> FashionMNISTTeachers:
    """Train the teachers on ``train`` (or load their logits from the cache).

    ``train`` and ``test`` must already be cut to ``settings.num_train`` / ``num_test``; the
    teachers train on all but the last ``settings.held_out`` images of ``train`` and predict
    every image. ``cache_dir=False`` disables the cache; its entries are keyed by the settings
    and ``data_digest`` (by default, a digest of the splits' images and labels). With several
    processes (``jax.distributed``) process 0 alone trains (or loads) and caches them, and sends
    their logits to the others (:func:`mtbkd_jax.infer.multiprocess.from_main_process`): every
    process then holds the same teachers bit for bit, and one file is written.
    """
    settings = settings or TeacherSettings()
    if not 0 <= settings.held_out < train.num_examples:  # in every process, before any waits
        raise ValueError(
            f"held_out must lie in 0..{train.num_examples - 1} (the teachers need images to "
            f"train on), got {settings.held_out}"
        )
    if jax.process_count() == 1:
        return _load_or_train(train, test, settings, data_digest, cache_dir, say)
    from mtbkd_jax.infer.multiprocess import from_main_process

    made: list[FashionMNISTTeachers] = []

    def compute() -> tuple[np.ndarray, np.ndarray]:
        made.append(_load_or_train(train, test, settings, data_digest, cache_dir, say))
        return made[0].train_logits, made[0].test_logits

    like = tuple(
        jax.ShapeDtypeStruct((len(FASHION_MNIST_TEACHER_NAMES), split.num_examples, 10), np.float32)
        for split in (train, test)
    )
    train_logits, test_logits = from_main_process(compute, like)
    info = made[0].info if made else {"from_process": 0}  # process 0 writes the record
    return FashionMNISTTeachers(FASHION_MNIST_TEACHER_NAMES, train_logits, test_logits, info)


def _splits_digest(train: FashionMNISTSplit, test: FashionMNISTSplit) -> str:
    """BLAKE2b of the splits' images and labels (dtype, shape, bytes): the cache's data key
    when the caller gives none."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (train.images, train.labels, test.images, test.labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _load_or_train(
    train: FashionMNISTSplit,
    test: FashionMNISTSplit,
    settings: TeacherSettings,
    data_digest: str,
    cache_dir: str | os.PathLike | Literal[False] | None,
    say: Callable[..., object],
) -> FashionMNISTTeachers:
    seen = train.num_examples - settings.held_out
    cache = None
    if cache_dir is not False:
        digest = data_digest or _splits_digest(train, test)  # never another data set's
        cache = _cache_dir(cache_dir) / f"teachers-{settings.key(digest)}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as stored:
                    names = tuple(str(n) for n in stored["names"])
                    info = json.loads(str(stored["info"]))
                    train_logits, test_logits = stored["train_logits"], stored["test_logits"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
                raise ValueError(
                    f"the teachers' cache {cache} cannot be read ({type(error).__name__}: "
                    f"{str(error)[:120]}): delete it, and the teachers are trained again"
                ) from None
            if train_logits.shape[1] == train.num_examples and test_logits.shape[1] == (
                test.num_examples
            ):
                say(f"[fashion-mnist] teachers' logits loaded from {cache}")
                info.update(cache=str(cache), cached=True)
                return FashionMNISTTeachers(names, train_logits, test_logits, info)
    info, train_logits, test_logits = {}, [], []
    for index, name in enumerate(FASHION_MNIST_TEACHER_NAMES):
        start = time.perf_counter()
        module, losses = _train(
            _make_teacher(name, settings.seed + index),
            train.images[:seen],
            train.labels[:seen],
            epochs=settings.epochs[name],
            learning_rate=settings.learning_rates[name],
            batch_size=settings.batch_size,
            seed=settings.seed + 100 + index,
        )
        train_logits.append(_logits(module, train.images))
        test_logits.append(_logits(module, test.images))
        info[name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "epoch_losses": [round(v, 4) for v in losses],
            "train_accuracy": float(
                (train_logits[-1][:seen].argmax(-1) == train.labels[:seen]).mean()
            ),
            "test_accuracy": float((test_logits[-1].argmax(-1) == test.labels).mean()),
        }
        if settings.held_out:  # the images it did not train on
            unseen = train_logits[-1][seen:].argmax(-1) == train.labels[seen:]
            info[name]["held_out_accuracy"] = float(unseen.mean())
        say(
            f"[fashion-mnist] teacher {name}: {settings.epochs[name]} epochs in "
            f"{info[name]['seconds']} s, test accuracy {info[name]['test_accuracy']:.3f}"
        )
    names = FASHION_MNIST_TEACHER_NAMES
    train_stack, test_stack = np.stack(train_logits), np.stack(test_logits)
    info["settings"] = asdict(settings)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(
            partial,
            names=np.array(names),
            train_logits=train_stack,
            test_logits=test_stack,
            info=np.array(json.dumps(info)),
        )
        partial.replace(cache)
        say(f"[fashion-mnist] teachers' logits cached in {cache}")
    info.update(cache=None if cache is None else str(cache), cached=False)
    return FashionMNISTTeachers(names, train_stack, test_stack, info)
