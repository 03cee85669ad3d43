"""Fashion-MNIST as a multi-teacher distillation problem, with teachers trained once and cached.

The data are not part of the package. Debian's ``dataset-fashion-mnist`` package installs the
four IDX files (gzip-compressed) under ``/usr/share/datasets/fashion-mnist``;
:func:`find_fashion_mnist_dir` looks, in order, at the ``path`` argument, the environment
variable ``MTBKD_FASHION_MNIST_DIR`` and that default folder, and raises a
:class:`FileNotFoundError` naming what it looked for when the files are absent.

Three teachers of different kinds and expertise
(:mod:`mtbkd_jax.datasets.fashion_mnist_teachers`) are trained with optax on the training images
(all 60,000 by default): a small convolutional network (the strongest), a one-hidden-layer MLP
on the pixels and a multinomial logistic regression on the pixels (the weakest). Their logits on
every training and test image are cached in an ``.npz`` file whose name is a hash of the teacher
settings and of the data files, under ``cache_dir``, ``$MTBKD_FASHION_MNIST_CACHE`` or
``~/.cache/mtbkd_jax/fashion-mnist``; a second run loads them instead of training again.

The student sees the images downsampled to 14x14 (2x2 average pooling) and flattened to 196
pixels in [0, 1]: a few labelled training images, an unlabelled transfer set of other training
images on which the teachers' predictions inform its prior, and the test images.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtbkd_jax._checks import require_counts
from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.datasets.ood import digit_images
from mtbkd_jax.teachers import TeacherBank

if TYPE_CHECKING:
    from mtbkd_jax.datasets.fashion_mnist_teachers import FashionMNISTTeachers, TeacherSettings

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DEFAULT_DIR",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_TEACHER_NAMES",
    "FashionMNISTSplit",
    "fashion_mnist_available",
    "find_fashion_mnist_dir",
    "load_fashion_mnist",
    "load_fashion_mnist_distillation",
    "read_idx",
]

FASHION_MNIST_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_TEACHER_NAMES: tuple[str, ...] = ("cnn", "mlp", "logreg")
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV_VAR = "MTBKD_FASHION_MNIST_DIR"
FASHION_MNIST_CACHE_ENV_VAR = "MTBKD_FASHION_MNIST_CACHE"
# split -> (images, labels); each may also be stored uncompressed (without ".gz")
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SIZES = {"train": 60_000, "test": 10_000}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------- reading the files
def read_idx(file: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed when its name ends in ``.gz``."""
    file = Path(file)
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # cut short, or not gzip
        raise ValueError(f"{file} is truncated or not gzip-compressed ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{file} is not an IDX file (magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{file}: header says shape {shape}, so {expected} bytes; got {len(raw)}")
    if 0 in shape:
        raise ValueError(f"{file} holds no examples (shape {shape})")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _existing_file(folder: Path, name: str) -> Path:
    """``_file`` where the folder is known to hold it (``find_fashion_mnist_dir`` checked)."""
    file = _file(folder, name)
    if file is None:
        raise FileNotFoundError(f"{folder}: no {name} (or its uncompressed form)")
    return file


def _has_files(folder: Path) -> bool:
    return all(_file(folder, n) is not None for pair in FASHION_MNIST_FILES.values() for n in pair)


def find_fashion_mnist_dir(path: str | os.PathLike | None = None) -> Path:
    """The Fashion-MNIST folder; raises :class:`FileNotFoundError` naming what was looked for.

    An explicit ``path`` (or ``$MTBKD_FASHION_MNIST_DIR``) is the only place looked at;
    otherwise ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    """
    if path is not None:
        where, folder = "the path argument", Path(path)
    elif os.environ.get(FASHION_MNIST_ENV_VAR):
        where, folder = f"${FASHION_MNIST_ENV_VAR}", Path(os.environ[FASHION_MNIST_ENV_VAR])
    else:
        where, folder = "the default folder", FASHION_MNIST_DEFAULT_DIR
    if _has_files(folder):
        return folder.resolve()
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    missing = [n for n in names if _file(folder, n) is None]
    raise FileNotFoundError(
        f"Fashion-MNIST not found in {folder} ({where}). Expected the files {', '.join(names)} "
        f"(gzip-compressed or not); missing: {', '.join(missing)}. Install them with "
        f"`apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_DEFAULT_DIR}), or pass "
        f"path=... / --data PATH or set ${FASHION_MNIST_ENV_VAR} to the folder holding them."
    )


def fashion_mnist_available(path: str | os.PathLike | None = None) -> bool:
    """Whether :func:`find_fashion_mnist_dir` finds the data."""
    try:
        find_fashion_mnist_dir(path)
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True, eq=False)
class FashionMNISTSplit:
    """One split: ``images`` (N, 28, 28) float32 in [0, 1] and ``labels`` (N,) int32."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])


def load_fashion_mnist(
    path: str | os.PathLike | None = None, split: str = "train"
) -> FashionMNISTSplit:
    """Read the ``"train"`` (60,000) or ``"test"`` (10,000) images and labels."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be one of {tuple(FASHION_MNIST_FILES)}, got {split!r}")
    folder = find_fashion_mnist_dir(path)
    image_name, label_name = FASHION_MNIST_FILES[split]
    images = read_idx(_existing_file(folder, image_name))
    labels = read_idx(_existing_file(folder, label_name))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{folder}: expected images (N, 28, 28) and labels (N,), "
            f"got {images.shape} and {labels.shape}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{folder}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return FashionMNISTSplit(
        images=(images.astype(np.float32) / 255.0), labels=labels.astype(np.int32)
    )


def _data_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for pair in FASHION_MNIST_FILES.values():
        for name in pair:
            file = _existing_file(folder, name)
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- the problem
def _downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool (N, 28, 28) by ``factor`` and flatten: (N, (28 // factor) ** 2)."""
    n, h, w = images.shape
    side_h, side_w = h // factor, w // factor
    cut = images[:, : side_h * factor, : side_w * factor]
    pooled = cut.reshape(n, side_h, factor, side_w, factor).mean(axis=(2, 4))
    return pooled.reshape(n, -1).astype(np.float32)


def _check_arguments(
    seed: int, num_labelled: int, num_transfer: int, num_validation: int, downsample: int
) -> None:
    """The loader's counts, before any file is read (``downsample`` above 28 pools the images
    to nothing: a problem of zero features)."""
    require_counts(
        seed=(seed, 0),
        num_labelled=(num_labelled, 1),
        num_transfer=(num_transfer, 1),
        num_validation=(num_validation, 0),
        downsample=(downsample, 1),
    )
    if downsample > 28:
        raise ValueError(f"downsample must be at most 28 (the images' width), got {downsample}")


def load_fashion_mnist_distillation(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_labelled: int = 2000,
    num_transfer: int = 8000,
    num_validation: int = 0,
    downsample: int = 2,
    teacher_settings: TeacherSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    say: Callable[..., object] = print,
) -> tuple[DistillationData, FashionMNISTTeachers]:
    """The student's labelled, transfer and test images and the teachers on them.

    The labelled, transfer and ``num_validation`` labelled validation images are drawn without
    overlap (permutation by ``seed``) from the teachers' training pool (the first
    ``teacher_settings.num_train`` training images), or, with ``teacher_settings.held_out``,
    from the pool's last ``held_out`` images, on which the teachers did not train; the test
    set is the first ``num_test`` test images. The student's inputs are the images
    average-pooled by ``downsample`` and flattened (196 pixels for 2).

    The OOD set (``ood_inputs``) is handwritten digits, not clothes: scikit-learn's bundled
    8x8 digits enlarged to 28x28 images in [0, 1] (:func:`~mtbkd_jax.datasets.ood.
    digit_images`; as many as the test images, at most 1,797, picked by ``seed``), pooled and
    flattened like the test images.
    """
    from mtbkd_jax.datasets.fashion_mnist_teachers import TeacherSettings, fashion_mnist_teachers

    _check_arguments(seed, num_labelled, num_transfer, num_validation, downsample)
    settings = teacher_settings or TeacherSettings()
    folder = find_fashion_mnist_dir(path)
    train, test = load_fashion_mnist(folder, "train"), load_fashion_mnist(folder, "test")
    if settings.num_train is not None:
        train = FashionMNISTSplit(
            train.images[: settings.num_train], train.labels[: settings.num_train]
        )
    if settings.num_test is not None:
        test = FashionMNISTSplit(test.images[: settings.num_test], test.labels[: settings.num_test])
    total = num_labelled + num_transfer + num_validation
    pool = settings.held_out or train.num_examples
    if total > pool:  # each count is checked above
        where = "the held-out images" if settings.held_out else "the training images"
        raise ValueError(
            f"num_labelled and num_transfer must be >= 1, num_validation >= 0, and together at "
            f"most {pool} ({where}), got {num_labelled}, {num_transfer} and {num_validation}"
        )
    teachers = fashion_mnist_teachers(
        train,
        test,
        settings=settings,
        data_digest=_data_digest(folder),
        cache_dir=cache_dir,
        say=say,
    )
    order = np.random.default_rng(seed).permutation(pool) + (train.num_examples - pool)
    label, transfer = order[:num_labelled], order[num_labelled : num_labelled + num_transfer]
    validation = order[num_labelled + num_transfer : total]
    prior = np.concatenate([label, transfer])
    names = list(teachers.names)
    data = DistillationData(
        name="fashion-mnist",
        x_train=_downsample(train.images[label], downsample),
        y_train=train.labels[label],
        x_transfer=_downsample(train.images[transfer], downsample),
        x_test=_downsample(test.images, downsample),
        y_test=test.labels,
        teachers_prior=TeacherBank.from_logits(teachers.train_logits[:, prior], names=names),
        teachers_test=TeacherBank.from_logits(teachers.test_logits, names=names),
        x_validation=_downsample(train.images[validation], downsample) if num_validation else None,
        y_validation=train.labels[validation] if num_validation else None,
        ood_inputs=_downsample(digit_images(min(test.num_examples, 1797), seed), downsample),
    )
    return data, teachers
