"""Checkpoints of long runs: the state, rewritten; the draws, appended.

A checkpoint at ``path`` is two files:

* ``path`` itself, an ``.npz`` holding the run state's leaves (positions, momenta,
  accumulators: small) and a JSON record of the run's fingerprint, its progress, and how many
  bytes of draws are committed. It is rewritten after every chunk, atomically (a temporary file
  moved into place).
* ``path + ".draws"``, the draws: each chunk's arrays are *appended* as raw bytes. Writing a
  chunk costs what the chunk holds, not what the run holds so far.

The state file is written last, so it commits the draws before it: a run killed at any point
(mid-append, mid-rewrite) resumes from the last complete state file, and the draws file is cut
back to the length that file committed. The resumed run then repeats the interrupted chunk
exactly (its random numbers depend only on the chain key, the epoch and the step).

Resuming checks the fingerprint (:mod:`mtbkd_jax.infer.fingerprint`): a checkpoint is never
continued with another model, data, settings or seed. Every problem with a checkpoint file is a
:class:`CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np

from mtbkd_jax._paths import prepare_output_file
from mtbkd_jax.infer.fingerprint import RunFingerprint

__all__ = ["Checkpoint", "CheckpointError"]

_FORMAT = "mtbkd_jax checkpoint"
_VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed: not a checkpoint, truncated, or another run's.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, path, problem: str):
        self.path = Path(path)
        super().__init__(
            f"checkpoint {str(path)!r} cannot be resumed: {problem}. Delete it (and "
            f"{Path(path).name}.draws beside it) or pass another checkpoint_path"
        )


class Checkpoint:
    """The checkpoint of one run at ``path``.

    Args:
        path: the state file; the draws go to ``path + ".draws"``.
        fingerprint: what the run's draws depend on (stored, and checked on resume).
    """

    def __init__(self, path, fingerprint: RunFingerprint):
        self.path = _checked_path(path)
        self.draws_path = self.path.with_name(self.path.name + ".draws")
        self.fingerprint = fingerprint
        self._committed = 0  # bytes of the draws file that the state file vouches for
        self._chunks: list[list] = []  # per chunk: [[name, dtype, shape], ...]

    # ------------------------------------------------------------------ reading
    def check_readable(self) -> None:
        """Raise :class:`CheckpointError` now if a file at ``path`` is not a readable checkpoint
        (so that a run refuses it before any compute, not after its set-up)."""
        if self.path.exists():
            self._read_state()

    def load(self, like_state):
        """The stored ``(state, collected, progress)``, or ``None`` when there is no checkpoint.

        ``like_state`` gives the state's structure; ``collected`` is name -> array, the chunks'
        draws concatenated along axis 1 (chains, draws, ...).

        Raises:
            CheckpointError: a file that is not a checkpoint, is truncated, belongs to another
                run (the message lists what differs) or holds a state of other shapes.
        """
        if not self.path.exists():
            self.draws_path.unlink(missing_ok=True)  # a crash before the first state write
            return None
        meta, leaves = self._read_state()
        stored = RunFingerprint.from_json(meta["fingerprint"])
        differences = stored.differences(self.fingerprint)
        if differences:
            raise CheckpointError(
                self.path, "it was written by a run with other settings: " + "; ".join(differences)
            )
        expected = jax.tree.leaves(like_state)
        shapes = [tuple(np.shape(x)) for x in expected]
        if [tuple(x.shape) for x in leaves] != shapes:
            raise CheckpointError(self.path, "its state has other shapes than this run's model")
        state = jax.tree.unflatten(jax.tree.structure(like_state), leaves)
        self._committed = int(meta["draws"]["committed_bytes"])
        self._chunks = [list(map(list, chunk)) for chunk in meta["draws"]["chunks"]]
        collected = self._read_draws()
        return state, collected, meta["progress"]

    def _read_state(self):
        try:
            with np.load(self.path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != _FORMAT:
                    raise CheckpointError(self.path, "it is not a mtbkd_jax checkpoint")
                if meta.get("version") != _VERSION:
                    raise CheckpointError(
                        self.path,
                        f"it was written in format version {meta.get('version')}, this "
                        f"version reads {_VERSION}",
                    )
                leaves = [np.asarray(data[f"state_{i}"]) for i in range(meta["num_leaves"])]
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                self.path,
                f"it is not a readable checkpoint (truncated, or another kind of file: "
                f"{type(error).__name__})",
            ) from None
        return meta, leaves

    def _read_draws(self) -> dict:
        size = self.draws_path.stat().st_size if self.draws_path.exists() else 0
        if size < self._committed:
            raise CheckpointError(
                self.path,
                f"its draws file {self.draws_path.name} holds {size} bytes of the "
                f"{self._committed} the state committed (truncated or deleted)",
            )
        parts: dict[str, list] = {}
        with open(self.draws_path, "rb") as handle:
            for chunk in self._chunks:
                for name, dtype, shape in chunk:
                    count = int(np.prod(shape))
                    array = np.fromfile(handle, dtype=np.dtype(dtype), count=count)
                    parts.setdefault(name, []).append(array.reshape(shape))
        if size > self._committed:  # a chunk appended but never committed: drop it
            with open(self.draws_path, "r+b") as handle:
                handle.truncate(self._committed)
        return {k: np.concatenate(v, axis=1) for k, v in parts.items()}

    # ------------------------------------------------------------------ writing
    def save(self, state, chunk: dict, progress: dict) -> None:
        """Append ``chunk`` (name -> array (chains, draws, ...)) and rewrite the state.

        Only the new draws are written; the state file, written last and atomically, commits
        them.
        """
        mode = "r+b" if self.draws_path.exists() else "wb"
        spec = []
        with open(self.draws_path, mode) as handle:
            handle.seek(self._committed)
            for name in sorted(chunk):
                array = np.ascontiguousarray(chunk[name])
                handle.write(array.tobytes())
                spec.append([name, array.dtype.str, list(array.shape)])
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
            committed = handle.tell()
        leaves = jax.tree.leaves(state)
        arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "fingerprint": self.fingerprint.to_json(),
            "progress": progress,
            "num_leaves": len(leaves),
            "draws": {"committed_bytes": committed, "chunks": [*self._chunks, spec]},
        }
        arrays["meta"] = np.asarray(json.dumps(meta))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.path)  # a crash before this line leaves the previous state intact
        finally:
            tmp.unlink(missing_ok=True)
        self._committed = committed
        self._chunks.append(spec)


def _checked_path(path) -> Path:
    """The checkpoint's path, its folder created and writable (checked before any compute)."""
    return prepare_output_file(path, "checkpoint_path")
