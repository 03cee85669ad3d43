"""Hand-made features of a protein's amino-acid sequence for subcellular localisation.

A student that may not use a protein language model (nothing can be downloaded here) needs
features computed from the sequence alone. These encode what localisation is known to depend
on: the overall composition, and the sorting signals at the two ends of the chain.

The default groups (:data:`DEFAULT_FEATURE_GROUPS`, 48 features):

- ``composition``, ``length``: the 20 amino-acid fractions and the log length;
- ``signal_peptide``, ``transmembrane``, ``tail``: hydropathy (Kyte & Doolittle, 1982) of the
  most hydrophobic 9-residue window within the first 35 residues (a signal peptide's
  h-region), its position and the n-region's K + R; the most hydrophobic 19-residue window
  and the runs of windows above 1.6 (transmembrane helices: how many, how many after the
  signal region, how much of the chain they cover, whether one anchors within 60 residues of
  either end); the most hydrophobic 11-residue window of the last 30 residues (GPI anchors,
  tail anchors);
- ``transit_peptide``: the share of R, K, hydrophobics (AILMFVW), acids and S/T in residues
  2-21, and the largest amphipathic-helix moment (Eisenberg et al., 1984, consensus scale,
  100 degrees per residue, 11-residue windows) in the first 30 (mitochondrial and chloroplast
  transit peptides);
- ``charge``: net charge (K + R - D - E) of the first and last 30 residues and per residue;
- ``motifs``: flags for the C-terminal ER-retention signal [KH]DEL, the ER-retrieval dilysine
  signal (K at -3 and -4 or -5), the peroxisomal PTS1 [SAC][KRH][LM] at the very end and an
  N-myristoylation start (M)G; log(1 + count) of N-glycosylation sequons N-X-[ST] (X not P)
  and of nuclear localisation signals (K[KR]X[KR], runs [KR]{4,}, bipartite
  [KR]{2}X{10,12}[KR]{3}).

Optional groups (:data:`FEATURE_GROUPS`): 20-letter or 7-group compositions of the N- and
C-terminal 30 residues, an N-terminal hydropathy/charge profile in 5-residue bins, and
sequence complexity (composition entropy, longest single-residue run, the fraction of
21-residue windows below Uversky's charge-hydropathy boundary for disorder). On the DeepLoc
validation split they did not help a small MLP trained on 2,000 proteins. Dipeptide
composition is deliberately absent: its 400 columns overfit at that size.

Only the 20 standard residues are counted; others (X, U, B, Z, ...) take no part in
compositions and count as 0 hydropathy. Everything is deterministic, offline and computed
with NumPy (well under a millisecond per protein). Features are returned raw; standardise them
afterwards with training-set statistics.

The descriptor libraries on PyPI (``peptides``: GPL-3.0; ``propy3``: GPL-2.0-only) are not
used: their licences do not suit this Apache-2.0 package, and their whole-sequence
descriptors are averages of per-residue scales, i.e. linear in the composition above.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "AMINO_ACIDS",
    "DEFAULT_FEATURE_GROUPS",
    "FEATURE_GROUPS",
    "KYTE_DOOLITTLE",
    "feature_names",
    "sequence_features",
]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"

# Kyte, J. & Doolittle, R. F. (1982) J. Mol. Biol. 157, 105-132.
KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5,
    "G": -0.4, "H": -3.2, "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8,
    "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9, "Y": -1.3, "V": 4.2,
}  # fmt: skip

# Eisenberg, D., Weiss, R. M. & Terwilliger, T. C. (1984) PNAS 81, 140-144 (consensus scale).
_EISENBERG = {
    "A": 0.62, "R": -2.53, "N": -0.78, "D": -0.90, "C": 0.29, "Q": -0.85, "E": -0.74,
    "G": 0.48, "H": -0.40, "I": 1.38, "L": 1.06, "K": -1.50, "M": 0.64, "F": 1.19,
    "P": 0.12, "S": -0.18, "T": -0.05, "W": 0.81, "Y": 0.26, "V": 1.08,
}  # fmt: skip

_TERMINAL = 30  # residues in the N- and C-terminal windows
_TRANSIT = 20  # residues scanned for a mitochondrial / chloroplast transit peptide
_SIGNAL_REGION = 35  # the signal peptide's hydrophobic core lies within these residues
_SIGNAL_WINDOW = 9
_TM_WINDOW = 19
_TM_THRESHOLD = 1.6  # Kyte & Doolittle's threshold for a transmembrane 19-window
_TM_END_REGION = 60  # a helix this close to an end counts as an N- or C-terminal anchor
_TAIL = 30
_TAIL_WINDOW = 11
_MOMENT_WINDOW = 11
_MOMENT_ANGLE = 100.0
_DISORDER_WINDOW = 21
_PROFILE_BIN = 5
_PROFILE_BINS = 8

_UNKNOWN = 20
_CODE = np.full(256, _UNKNOWN, dtype=np.int64)
for _i, _aa in enumerate(AMINO_ACIDS):
    _CODE[ord(_aa)] = _i
    _CODE[ord(_aa.lower())] = _i
_KD = np.array([KYTE_DOOLITTLE[a] for a in AMINO_ACIDS] + [0.0])
_EIS = np.array([_EISENBERG[a] for a in AMINO_ACIDS] + [0.0])
_CHARGE = np.zeros(21)
_CHARGE[[AMINO_ACIDS.index(a) for a in "KR"]] = 1.0
_CHARGE[[AMINO_ACIDS.index(a) for a in "DE"]] = -1.0
_ANGLES = np.deg2rad(_MOMENT_ANGLE * np.arange(_MOMENT_WINDOW))
_COS, _SIN = np.cos(_ANGLES), np.sin(_ANGLES)


def _indices(letters: str) -> list[int]:
    return [AMINO_ACIDS.index(a) for a in letters]


_TRANSIT_GROUPS = {
    "R": _indices("R"),
    "K": _indices("K"),
    "hydrophobic": _indices("AILMFVW"),
    "acidic": _indices("DE"),
    "ST": _indices("ST"),
}

# A reduced alphabet for the terminal windows: fewer columns than 20 amino acids.
_REDUCED = {
    "aliphatic": _indices("AILMV"),
    "aromatic": _indices("FWY"),
    "basic": _indices("KRH"),
    "acidic": _indices("DE"),
    "polar": _indices("STNQ"),
    "GP": _indices("GP"),
    "C": _indices("C"),
}

_MOTIFS = {
    "er_retention_kdel": re.compile(r"[KH]DEL$"),
    "er_retrieval_dilysine": re.compile(r"(K.K..|KK..)$"),
    "pts1": re.compile(r"[SAC][KRH][LM]$"),
    "myristoylation": re.compile(r"^M?G"),
}
_COUNTED_MOTIFS = {
    "n_glycosylation": re.compile(r"(?=N[^P][ST])"),
    "nls_monopartite": re.compile(r"(?=K[KR].[KR])"),
    "nls_basic_run": re.compile(r"[KR]{4,}"),
    "nls_bipartite": re.compile(r"(?=[KR]{2}.{10,12}[KR]{3})"),
}


class _Protein:
    """One sequence, encoded once, with the quantities the feature groups share."""

    def __init__(self, sequence: str):
        self.sequence = sequence.strip().upper()
        self.codes = _CODE[np.frombuffer(self.sequence.encode("ascii", "replace"), np.uint8)]
        if self.codes.size == 0:
            raise ValueError("sequence_features: got an empty sequence")
        self.kd = _KD[self.codes]

    def composition(self, codes: np.ndarray) -> np.ndarray:
        counts = np.bincount(codes, minlength=21)[:20].astype(np.float64)
        total = counts.sum()
        return counts / total if total > 0 else counts

    def window_means(self, values: np.ndarray, width: int) -> np.ndarray:
        """Means of every ``width``-residue window (one window if shorter)."""
        width = min(width, values.size)
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        return (cumulative[width:] - cumulative[:-width]) / width


def _composition(p: _Protein) -> list[float]:
    return list(p.composition(p.codes))


def _length(p: _Protein) -> list[float]:
    return [math.log(p.codes.size)]


def _nterm_composition(p: _Protein) -> list[float]:
    return list(p.composition(p.codes[:_TERMINAL]))


def _cterm_composition(p: _Protein) -> list[float]:
    return list(p.composition(p.codes[-_TERMINAL:]))


def _reduced(codes: np.ndarray) -> list[float]:
    known = codes[codes < _UNKNOWN]
    if known.size == 0:
        return [0.0] * len(_REDUCED)
    return [float(np.isin(known, idx).mean()) for idx in _REDUCED.values()]


def _nterm_reduced(p: _Protein) -> list[float]:
    return _reduced(p.codes[:_TERMINAL])


def _cterm_reduced(p: _Protein) -> list[float]:
    return _reduced(p.codes[-_TERMINAL:])


def _nterm_profile(p: _Protein) -> list[float]:
    kd = np.zeros(_PROFILE_BINS * _PROFILE_BIN)
    charge = np.zeros_like(kd)
    head = p.codes[: kd.size]
    kd[: head.size] = _KD[head]
    charge[: head.size] = _CHARGE[head]
    return [
        *kd.reshape(_PROFILE_BINS, _PROFILE_BIN).mean(1),
        *charge.reshape(_PROFILE_BINS, _PROFILE_BIN).sum(1),
    ]


def _complexity(p: _Protein) -> list[float]:
    comp = p.composition(p.codes)
    nonzero = comp[comp > 0]
    entropy = float(-(nonzero * np.log2(nonzero)).sum())
    changes = np.flatnonzero(np.diff(p.codes) != 0)
    runs = np.diff(np.concatenate([[-1], changes, [p.codes.size - 1]]))
    # Uversky et al. (2000): a window is disordered below the charge-hydropathy boundary.
    hydropathy = (p.kd + 4.5) / 9.0
    mean_h = p.window_means(hydropathy, _DISORDER_WINDOW)
    mean_r = np.abs(p.window_means(_CHARGE[p.codes], _DISORDER_WINDOW))
    disordered = float((mean_h < (mean_r + 1.151) / 2.785).mean())
    return [entropy, math.log(runs.max()), disordered]


def _signal_peptide(p: _Protein) -> list[float]:
    region = p.kd[:_SIGNAL_REGION]
    windows = p.window_means(region, _SIGNAL_WINDOW)
    n_region = p.codes[:6]
    positive = float(np.isin(n_region, _indices("KR")).sum())
    return [float(windows.max()), float(np.argmax(windows)), positive]


def _segments(above: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) window index of each run of True."""
    if not above.any():
        return []
    padded = np.concatenate([[False], above, [False]]).astype(np.int8)
    edges = np.diff(padded)
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _transmembrane(p: _Protein) -> list[float]:
    windows = p.window_means(p.kd, _TM_WINDOW)
    width = min(_TM_WINDOW, p.codes.size)
    segments = _segments(windows > _TM_THRESHOLD)
    after_signal = [s for s in segments if s[0] >= _SIGNAL_REGION - 5]
    covered = np.zeros(p.codes.size, dtype=bool)
    for first, last in segments:
        covered[first : last + width] = True
    n_anchor = any(first < _TM_END_REGION for first, _ in segments)
    c_anchor = any(last + width > p.codes.size - _TM_END_REGION for _, last in segments)
    return [
        float(windows.max()),
        math.log1p(len(segments)),
        math.log1p(len(after_signal)),
        float(covered.mean()),
        float(n_anchor),
        float(c_anchor),
    ]


def _tail(p: _Protein) -> list[float]:
    return [float(p.window_means(p.kd[-_TAIL:], _TAIL_WINDOW).max())]


def _transit_peptide(p: _Protein) -> list[float]:
    head = p.codes[1 : _TRANSIT + 1] if p.codes.size > 1 else p.codes
    fractions = [float(np.isin(head, idx).mean()) for idx in _TRANSIT_GROUPS.values()]
    h = _EIS[p.codes[:_TERMINAL]]
    width = min(_MOMENT_WINDOW, h.size)
    frames = np.lib.stride_tricks.sliding_window_view(h, width)
    moment = np.hypot(frames @ _COS[:width], frames @ _SIN[:width]).max() / width
    return [*fractions, float(moment)]


def _charge(p: _Protein) -> list[float]:
    charge = _CHARGE[p.codes]
    return [
        float(charge[:_TERMINAL].sum()),
        float(charge[-_TERMINAL:].sum()),
        float(charge.mean()),
    ]


def _motifs(p: _Protein) -> list[float]:
    flags = [float(bool(m.search(p.sequence))) for m in _MOTIFS.values()]
    counts = [math.log1p(len(m.findall(p.sequence))) for m in _COUNTED_MOTIFS.values()]
    return flags + counts


_GROUPS = {
    "composition": (_composition, [f"aa_{a}" for a in AMINO_ACIDS]),
    "length": (_length, ["log_length"]),
    "nterm_composition": (_nterm_composition, [f"nterm{_TERMINAL}_{a}" for a in AMINO_ACIDS]),
    "cterm_composition": (_cterm_composition, [f"cterm{_TERMINAL}_{a}" for a in AMINO_ACIDS]),
    "nterm_reduced": (_nterm_reduced, [f"nterm{_TERMINAL}_group_{g}" for g in _REDUCED]),
    "cterm_reduced": (_cterm_reduced, [f"cterm{_TERMINAL}_group_{g}" for g in _REDUCED]),
    "nterm_profile": (
        _nterm_profile,
        [f"nterm_kd_{i * _PROFILE_BIN + 1}_{(i + 1) * _PROFILE_BIN}" for i in range(_PROFILE_BINS)]
        + [
            f"nterm_charge_{i * _PROFILE_BIN + 1}_{(i + 1) * _PROFILE_BIN}"
            for i in range(_PROFILE_BINS)
        ],
    ),
    "complexity": (
        _complexity,
        ["composition_entropy", "log_longest_run", "disordered_fraction"],
    ),
    "signal_peptide": (
        _signal_peptide,
        ["signal_max_kd9", "signal_max_kd9_position", "signal_nregion_KR"],
    ),
    "transmembrane": (
        _transmembrane,
        [
            "tm_max_kd19",
            "tm_log1p_segments",
            "tm_log1p_segments_after_signal",
            "tm_fraction_covered",
            "tm_nterm_anchor",
            "tm_cterm_anchor",
        ],
    ),
    "tail": (_tail, [f"tail{_TAIL}_max_kd{_TAIL_WINDOW}"]),
    "transit_peptide": (
        _transit_peptide,
        [f"transit{_TRANSIT}_{g}" for g in _TRANSIT_GROUPS] + ["transit_max_moment"],
    ),
    "charge": (_charge, ["nterm_net_charge", "cterm_net_charge", "net_charge_per_residue"]),
    "motifs": (
        _motifs,
        list(_MOTIFS) + [f"log1p_{name}" for name in _COUNTED_MOTIFS],
    ),
}

FEATURE_GROUPS: tuple[str, ...] = tuple(_GROUPS)
# Chosen on the DeepLoc validation split (the reference's 500 of the 2,500 training proteins;
# never on the test set): the terminal-window compositions, N-terminal profile and complexity
# groups lowered the validation accuracy of a 128-unit MLP and of logistic regression.
DEFAULT_FEATURE_GROUPS: tuple[str, ...] = (
    "composition",
    "length",
    "signal_peptide",
    "transmembrane",
    "tail",
    "transit_peptide",
    "charge",
    "motifs",
)


def _check_groups(groups: Sequence[str] | None) -> tuple[str, ...]:
    if groups is None:
        return DEFAULT_FEATURE_GROUPS
    groups = tuple(groups)
    unknown = [g for g in groups if g not in _GROUPS]
    if unknown or not groups:
        raise ValueError(f"groups must be a non-empty subset of {FEATURE_GROUPS}, got {groups}")
    return groups


def feature_names(groups: Sequence[str] | None = None) -> list[str]:
    """The column names :func:`sequence_features` gives for ``groups``."""
    return [name for g in _check_groups(groups) for name in _GROUPS[g][1]]


def sequence_features(
    sequences: Sequence[str], *, groups: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Features of each amino-acid sequence, shape ``(N, F)`` float32, and their names.

    Args:
        sequences: one-letter amino-acid sequences (case-insensitive).
        groups: which feature groups to compute, from :data:`FEATURE_GROUPS`
            (default :data:`DEFAULT_FEATURE_GROUPS`).

    Returns:
        ``(features, names)``; the features are raw (not standardised).
    """
    if isinstance(sequences, str):
        raise TypeError("sequences must be a list of sequences, not one string")
    groups = _check_groups(groups)
    functions = [_GROUPS[g][0] for g in groups]
    names = feature_names(groups)
    out = np.empty((len(sequences), len(names)), dtype=np.float32)
    for row, sequence in enumerate(sequences):
        protein = _Protein(str(sequence))
        out[row] = [value for f in functions for value in f(protein)]
    return out, names
