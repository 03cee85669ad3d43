"""The DeepLoc 2.0 subset with two real teachers (ESM-2 650M and ProtT5 classifiers).

Protein subcellular localisation, 10 classes, as released with the MT-BKD paper's reference
code (see the data folder's README). The reference student used frozen ESM-2 8M embeddings,
which cannot be computed offline, so the student here sees features computed from the
amino-acid sequence alone (:mod:`mtbkd_jax.datasets.protein_features`), standardised with the
training proteins' mean and standard deviation.

The data are not part of the package. :func:`load_deeploc` looks for the folder in, in order:
the ``path`` argument, the environment variable ``MTBKD_DEEPLOC_DIR``,
``../shared/data/deeploc`` relative to the working directory and the same relative to the
repository root.

Splits follow the reference: the 2,500 training proteins are split 2,000 / 500 by
``sklearn.model_selection.train_test_split(..., random_state=42)`` without stratification
(the reference calls ``train_test_split(df, test_size=0.2, random_state=42)``, which selects
the same rows in the same order as ``test_size=500``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from mtbkd_jax._checks import require_counts
from mtbkd_jax.datasets._deeploc_files import read_proteins, teacher_bank
from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.datasets.ood import shuffled_features
from mtbkd_jax.datasets.protein_features import sequence_features
from mtbkd_jax.teachers import TeacherBank

__all__ = [
    "DEEPLOC_CLASS_NAMES",
    "DEEPLOC_FILES",
    "DEEPLOC_TEACHER_NAMES",
    "DeepLocData",
    "DeepLocSplit",
    "HELD_OUT_SEED",
    "deeploc_available",
    "find_deeploc_dir",
    "load_deeploc",
]

DEEPLOC_CLASS_NAMES: tuple[str, ...] = (
    "Cytoplasm",
    "Nucleus",
    "Extracellular",
    "Cell membrane",
    "Mitochondrion",
    "Plastid",
    "Endoplasmic reticulum",
    "Lysosome/Vacuole",
    "Golgi apparatus",
    "Peroxisome",
)
DEEPLOC_TEACHER_NAMES: tuple[str, ...] = ("esm2_650m", "prott5")
DEEPLOC_ENV_VAR = "MTBKD_DEEPLOC_DIR"
HELD_OUT_SEED = 20261205  # draws the test-file proteins of DeepLocData.held_out_validation

_TRAIN_FILE = "data_our_train_sample.csv"
_TEST_FILE = "data_our_test.csv"
_MULTI_FILE = "data_MuLabel_sub.csv"
_TRAIN_TEACHER_FILES = ("ESM_650M_probs_sample.csv", "T5_probs_sample.csv")  # header row 0..9
_TEST_TEACHER_FILES = ("ESM_650M_probs_test.csv", "T5_probs_test.csv")  # no header row
DEEPLOC_FILES: tuple[str, ...] = (
    _TRAIN_FILE,
    _TEST_FILE,
    _MULTI_FILE,
    *_TRAIN_TEACHER_FILES,
    *_TEST_TEACHER_FILES,
)
_RELATIVE = Path("..") / "shared" / "data" / "deeploc"


@dataclass(frozen=True, eq=False)
class DeepLocSplit:
    """One set of proteins.

    Attributes:
        x: standardised sequence features, (N, F) float32.
        y: the ``Label`` column, (N,) int32 (for multi-location proteins, the first location
            present).
        locations: the ten 0/1 location columns in :data:`DEEPLOC_CLASS_NAMES` order,
            (N, 10) int32.
        localization_count: number of locations of each protein, (N,) int32 (1 for the
            single-location files).
        teachers: the two teachers' outputs on these proteins, or ``None`` (multi-location).
        accessions: UniProt accessions.
        sequences: amino-acid sequences.
        kingdoms: ``Metazoa``, ``Fungi`` or ``Viridiplantae`` (metadata; not a feature).
        rows: each protein's row in its source file (0-based, header excluded).
    """

    x: np.ndarray
    y: np.ndarray
    locations: np.ndarray
    localization_count: np.ndarray
    teachers: TeacherBank | None
    accessions: tuple[str, ...]
    sequences: tuple[str, ...]
    kingdoms: tuple[str, ...]
    rows: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class DeepLocData:
    """The DeepLoc benchmark: splits, features and teachers.

    Attributes:
        train, validation: the reference's 2,000 / 500 split of the training file.
        test: the 1,000 test proteins.
        multilocation: the 2,000 proteins with 2 to 5 locations (no teacher outputs).
        feature_names: names of the F feature columns.
        feature_mean, feature_std: the training proteins' raw-feature statistics used to
            standardise every split (``x = (raw - mean) / std``; a constant column has std 1).
        class_names: the 10 classes in label order.
        path: the data folder used.
    """

    train: DeepLocSplit
    validation: DeepLocSplit
    test: DeepLocSplit
    multilocation: DeepLocSplit
    feature_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    class_names: tuple[str, ...]
    path: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def localization_count(self) -> np.ndarray:
        """Locations per multi-location protein, (2000,) int32."""
        return self.multilocation.localization_count

    @property
    def teacher_names(self) -> tuple[str, ...]:
        return DEEPLOC_TEACHER_NAMES

    def distillation_data(
        self, *, ood_seed: int = 0, validation_from_test: int = 0
    ) -> DistillationData:
        """The problem an experiment runs on: the teacher prior on the training proteins (no
        transfer set), the validation split, and the multi-location proteins as the extra input
        set ``"multi-location"``.

        Its OOD set (``ood_inputs``) is "shuffled" proteins: the test proteins' features with
        each feature column permuted independently across proteins (by ``ood_seed``;
        :func:`~mtbkd_jax.datasets.ood.shuffled_features`), so every feature keeps its
        distribution but no row is a real protein's feature vector.

        ``validation_from_test = k > 0`` replaces the validation split by ``k`` proteins of the
        test file (:meth:`held_out_validation`), and the test split by the others. The teachers
        were trained on the training file, validation split included, so there they look far
        more reliable than on new proteins; proteins of the test file are new to them, so a
        setting chosen there (or trust learned there, ``trust_labels="validation"``) is judged
        as the remaining test proteins will judge it."""
        validation, test = self.validation, self.test
        if validation_from_test:
            validation, test = self.held_out_validation(validation_from_test)
        return DistillationData(
            name="deeploc",
            x_train=self.train.x,
            y_train=self.train.y,
            x_test=test.x,
            y_test=test.y,
            teachers_prior=_bank(self.train),
            teachers_test=_bank(test),
            x_validation=validation.x,
            y_validation=validation.y,
            teachers_validation=_bank(validation),
            extra_inputs={"multi-location": self.multilocation.x},
            ood_inputs=shuffled_features(test.x, ood_seed),
        )

    def held_out_validation(self, size: int) -> tuple[DeepLocSplit, DeepLocSplit]:
        """``size`` proteins of the test file as a validation split the teachers were not
        trained on, and the remaining test proteins in file order: ``(validation, test)``.

        The proteins are drawn at random with a fixed seed (:data:`HELD_OUT_SEED`), the same
        for every experiment seed, so runs of several seeds share one test set."""
        count = self.test.num_examples
        if isinstance(size, bool) or not isinstance(size, Integral) or not 0 < size < count:
            raise ValueError(
                f"validation_from_test must be an integer in 1..{count - 1} (test-file proteins "
                f"held out for validation), got {size!r}"
            )
        order = np.random.default_rng(HELD_OUT_SEED).permutation(count)
        return _subset(self.test, np.sort(order[:size])), _subset(self.test, np.sort(order[size:]))


def _subset(split: DeepLocSplit, rows: np.ndarray) -> DeepLocSplit:
    """The proteins ``rows`` (positions in ``split``) of a split."""
    return DeepLocSplit(
        x=split.x[rows],
        y=split.y[rows],
        locations=split.locations[rows],
        localization_count=split.localization_count[rows],
        teachers=None if split.teachers is None else split.teachers.take(rows),
        accessions=tuple(split.accessions[i] for i in rows),
        sequences=tuple(split.sequences[i] for i in rows),
        kingdoms=tuple(split.kingdoms[i] for i in rows),
        rows=split.rows[rows],
    )


def _bank(split: DeepLocSplit) -> TeacherBank:
    if split.teachers is None:
        raise ValueError("this DeepLoc split has no teacher outputs")
    return split.teachers


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in DEEPLOC_FILES)


def _candidates(path: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    if path is not None:
        return [("the path argument", Path(path))]
    from_env = os.environ.get(DEEPLOC_ENV_VAR)
    if from_env:
        return [(f"${DEEPLOC_ENV_VAR}", Path(from_env))]
    repo_root = Path(__file__).resolve().parents[3]
    return [
        ("the working directory", Path.cwd() / _RELATIVE),
        ("the repository root", repo_root / _RELATIVE),
    ]


def find_deeploc_dir(path: str | os.PathLike | None = None) -> Path:
    """The DeepLoc data folder; raises :class:`FileNotFoundError` naming what was looked for.

    An explicit ``path`` (or ``$MTBKD_DEEPLOC_DIR``) is the only place looked at; otherwise
    ``../shared/data/deeploc`` relative to the working directory, then to the repository root.
    """
    candidates = _candidates(path)
    for _, folder in candidates:
        if _has_files(folder):
            return folder.resolve()
    looked = "; ".join(f"{folder} ({why})" for why, folder in candidates)
    missing = {
        str(folder): [name for name in DEEPLOC_FILES if not (folder / name).is_file()]
        for _, folder in candidates
    }
    raise FileNotFoundError(
        f"DeepLoc data not found. Looked in: {looked}. Expected the files "
        f"{', '.join(DEEPLOC_FILES)}; missing: {missing}. Pass path=... or set "
        f"${DEEPLOC_ENV_VAR} to the folder holding them."
    )


def deeploc_available(path: str | os.PathLike | None = None) -> bool:
    """Whether :func:`find_deeploc_dir` finds the data."""
    try:
        find_deeploc_dir(path)
    except FileNotFoundError:
        return False
    return True


def _split(
    proteins: Mapping[str, Any], rows: np.ndarray, x: np.ndarray, teachers: TeacherBank | None
) -> DeepLocSplit:
    return DeepLocSplit(
        x=x[rows],
        y=proteins["y"][rows],
        locations=proteins["locations"][rows],
        localization_count=proteins["localization_count"][rows],
        teachers=None if teachers is None else teachers.take(rows),
        accessions=tuple(proteins["accessions"][i] for i in rows),
        sequences=tuple(proteins["sequences"][i] for i in rows),
        kingdoms=tuple(proteins["kingdoms"][i] for i in rows),
        rows=rows,
    )


def load_deeploc(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 42,
    validation_size: int = 500,
    feature_groups: Sequence[str] | None = None,
) -> DeepLocData:
    """Load the DeepLoc subset: splits, standardised sequence features and both teachers.

    Args:
        path: the data folder (default: see :func:`find_deeploc_dir`).
        seed: ``random_state`` of the train/validation split (42 as in the reference).
        validation_size: proteins of the training file held out for validation (500).
        feature_groups: the feature groups of
            :func:`~mtbkd_jax.datasets.protein_features.sequence_features` (default: its
            default set).

    Returns:
        A :class:`DeepLocData`. Teacher banks hold the files' logits (log-softmaxed), teachers
        named ``esm2_650m`` and ``prott5``.
    """
    require_counts(seed=(seed, 0), validation_size=(validation_size, 1))  # not None, 0.2, True
    if isinstance(feature_groups, str):  # it would be split into letters
        raise TypeError(f"feature_groups must be a sequence of group names, got {feature_groups!r}")
    folder = find_deeploc_dir(path)
    train_file = read_proteins(folder / _TRAIN_FILE, DEEPLOC_CLASS_NAMES)
    test_file = read_proteins(folder / _TEST_FILE, DEEPLOC_CLASS_NAMES)
    multi_file = read_proteins(folder / _MULTI_FILE, DEEPLOC_CLASS_NAMES)
    num_train = len(train_file["y"])
    if not 0 < validation_size < num_train:
        raise ValueError(f"validation_size must lie in 1..{num_train - 1}, got {validation_size}")
    labelled = (DEEPLOC_CLASS_NAMES, DEEPLOC_TEACHER_NAMES)
    train_teachers = teacher_bank(folder, _TRAIN_TEACHER_FILES, True, num_train, *labelled)
    test_teachers = teacher_bank(folder, _TEST_TEACHER_FILES, False, len(test_file["y"]), *labelled)

    train_rows, validation_rows = train_test_split(
        np.arange(num_train), test_size=validation_size, random_state=seed, shuffle=True
    )
    raw = {}
    names = None
    for key, proteins in (("train", train_file), ("test", test_file), ("multi", multi_file)):
        raw[key], names = sequence_features(list(proteins["sequences"]), groups=feature_groups)
    mean = raw["train"][train_rows].astype(np.float64).mean(axis=0)
    std = raw["train"][train_rows].astype(np.float64).std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)

    def standardise(values: np.ndarray) -> np.ndarray:
        return ((values - mean) / std).astype(np.float32)

    x_train_file = standardise(raw["train"])
    x_test = standardise(raw["test"])
    x_multi = standardise(raw["multi"])
    return DeepLocData(
        train=_split(train_file, train_rows, x_train_file, train_teachers),
        validation=_split(train_file, validation_rows, x_train_file, train_teachers),
        test=_split(test_file, np.arange(len(test_file["y"])), x_test, test_teachers),
        multilocation=_split(multi_file, np.arange(len(multi_file["y"])), x_multi, None),
        feature_names=tuple(names or ()),
        feature_mean=mean.astype(np.float32),
        feature_std=std.astype(np.float32),
        class_names=DEEPLOC_CLASS_NAMES,
        path=folder,
    )
