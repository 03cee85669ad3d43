"""Checkpoints of long runs: the state, rewritten; the draws, appended.

A checkpoint at ``path`` is two files:

* ``path`` itself: a JSON header (the run's fingerprint, its progress, how many bytes of draws
  are committed and a BLAKE2b digest of those bytes), the run state's leaves as raw bytes
  (positions, momenta, accumulators: small), and a BLAKE2b digest of everything before it. It is
  rewritten after every chunk, atomically (a temporary file moved into place).
* ``path + ".draws"``, the draws: each chunk is *appended* as one block, its number of draws
  ``k`` (8 bytes) then each site's ``(chains, k, ...)`` array as raw bytes (sites in name
  order; their dtypes and shapes are recorded once in the state file). Writing a chunk costs
  what the chunk holds, not what the run holds so far, and the state file stays the same size
  however long the run.

The state file is written last, so it commits the draws before it: a run killed at any point
(mid-append, mid-rewrite) resumes from the last complete state file, and the draws file is cut
back to the length that file committed. The resumed run then repeats the interrupted chunk
exactly (its random numbers depend only on the chain key, the epoch and the step).

Resuming checks the fingerprint (:mod:`mtbkd_jax.infer.fingerprint`): a checkpoint is never
continued with another model, data, settings or seed; and both digests (one hash pass over the
draws): a damaged state file, or a draws file its state did not commit (another run's, bytes
changed) is refused, as is one written before the digests (it cannot be verified). Every
problem with a checkpoint file is a :class:`CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from mtbkd_jax._paths import prepare_output_file
from mtbkd_jax.infer._checkpoint_bytes import hashed, parse_draws, read_exactly
from mtbkd_jax.infer._samplers import with_unused_at_default
from mtbkd_jax.infer.fingerprint import RunFingerprint

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree

__all__ = ["Checkpoint", "CheckpointError"]

_MAGIC = b"MTBKDCKP"  # the state file: magic, header length (8 bytes), JSON header, leaves,
_VERSION = 3  # and the BLAKE2b of all that (16 bytes; the header holds the draws' digest)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed: not a checkpoint, truncated, or another run's.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(
        self, path: str | os.PathLike[str], problem: str, *, foreign: bool = False
    ) -> None:
        self.path = Path(path)
        advice = (
            f"Delete it (and {Path(path).name}.draws beside it) or pass another checkpoint_path"
            if not foreign  # a file of the user's own (a mistyped path) must not be deleted
            else "Nothing was written to it: if it is a file of yours, pass another "
            "checkpoint_path; if it is a checkpoint of an earlier mtbkd_jax, delete it"
        )
        super().__init__(f"checkpoint {str(path)!r} cannot be resumed: {problem}. {advice}")


class Checkpoint:
    """The checkpoint of one run at ``path``.

    Args:
        path: the state file; the draws go to ``path + ".draws"``.
        fingerprint: what the run's draws depend on (stored, and checked on resume); may be
            ``None`` at first, but must be set before :meth:`load` or :meth:`save`.

    In a run of several processes (:mod:`mtbkd_jax.infer.multiprocess`) every process reads
    the checkpoint, and only process 0 (``writer``) writes it: :meth:`save_in_background`
    does nothing elsewhere, and :meth:`load` leaves the files as they are.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: RunFingerprint | None) -> None:
        self.writer = jax.process_index() == 0
        self.path = _checked_path(path)
        self.draws_path = self.path.with_name(self.path.name + ".draws")
        self.fingerprint = fingerprint
        self._committed = 0  # bytes of the draws file that the state file vouches for
        self._sites: list | None = None  # [[name, dtype, shape with the draws axis as -1]]
        self._draws_digest = hashlib.blake2b(digest_size=16)  # of the committed bytes
        self._state_digest = hashlib.blake2b(digest_size=16)  # of the state file read
        self._fingerprint_json: str | None = None
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    def check_readable(self) -> None:
        """Raise :class:`CheckpointError` now if a file at ``path`` is not a readable checkpoint
        (so that a run refuses it before any compute, not after its set-up)."""
        if self.path.exists():
            self._read_state()

    def load(
        self, like_state: PyTree
    ) -> tuple[PyTree, dict[str, np.ndarray], dict[str, Any]] | None:
        """The stored ``(state, collected, progress)``, or ``None`` when there is no checkpoint.

        ``like_state`` gives the state's structure; ``collected`` is name -> array, the chunks'
        draws concatenated along axis 1 (chains, draws, ...).

        In a run of several processes every process reads the files, and they then check,
        with one ``process_allgather``, that they all read the same: whether there is a
        checkpoint, its epoch, this run's fingerprint and digests of the state and the draws
        (a checkpoint on a disk that not every process sees, or a file replaced between their
        reads, would otherwise resume the processes from different states, or hang them in
        different collectives). If one process cannot read it, all raise.

        Raises:
            CheckpointError: a file that is not a checkpoint, is truncated, belongs to another
                run (the message lists what differs) or holds a state of other shapes; or the
                processes read different checkpoints.
        """
        if jax.process_count() == 1:
            return self._load(like_state)
        try:
            restored, error = self._load(like_state), None
        except CheckpointError as caught:
            restored, error = None, caught
        self._agree(restored, error)
        return restored

    def _load(
        self, like_state: PyTree
    ) -> tuple[PyTree, dict[str, np.ndarray], dict[str, Any]] | None:
        assert self.fingerprint is not None, "set the run's fingerprint before load"
        self._fingerprint_json = self.fingerprint.to_json_text()  # fails now, not mid-run
        if not self.path.exists():
            if self.writer:
                self.draws_path.unlink(missing_ok=True)  # a crash before the first state write
            return None
        meta, leaves = self._read_state()
        stored = RunFingerprint.from_json(meta["fingerprint"])
        stored = RunFingerprint(with_unused_at_default(stored.exact), stored.approx)
        differences = stored.differences(self.fingerprint)
        if differences:
            raise CheckpointError(
                self.path, "it was written by a run with other settings: " + "; ".join(differences)
            )
        expected = jax.tree.leaves(like_state)
        shapes = [tuple(np.shape(x)) for x in expected]
        stored_shapes = [tuple(x.shape) for x in leaves]
        if stored_shapes != shapes:
            raise CheckpointError(
                self.path,
                f"its state has other shapes than this run's model ({len(stored_shapes)} arrays "
                f"of shapes {stored_shapes[:4]}..., this run {len(shapes)} of {shapes[:4]}...)",
            )
        state = jax.tree.unflatten(jax.tree.structure(like_state), leaves)
        self._committed = int(meta["draws"]["committed_bytes"])
        self._sites = meta["draws"]["sites"]
        return state, self._read_draws(meta["draws"]["blake2b"]), meta["progress"]

    def _agree(self, restored: tuple | None, error: CheckpointError | None) -> None:
        """Raise on every process unless every process read the same checkpoint (``load``).
        ``process_allgather`` rather than ``multihost_utils.assert_equal``: the latter raises
        only in the processes that differ from process 0, and leaves the others to hang in
        the run's next collective."""
        from jax.experimental import multihost_utils

        status = 2 if error is not None else 0 if restored is None else 1
        epoch = -1 if restored is None else int(restored[2]["next_epoch"])
        digests = [hashlib.blake2b((self._fingerprint_json or "").encode(), digest_size=16)]
        if restored is not None:  # the files' digests, checked as they were read
            digests += [self._state_digest, self._draws_digest]
        summary = np.frombuffer(b"".join(d.digest() for d in digests).ljust(48, b"\0"), np.uint8)
        mine = np.concatenate([np.array([status, epoch], np.int64).view(np.uint8), summary])
        everyone = np.asarray(multihost_utils.process_allgather(mine))
        epochs = everyone[:, :16].copy().view(np.int64)  # (processes, [status, epoch])
        if error is not None:
            raise error
        failed = [i for i, row in enumerate(epochs) if row[0] == 2]
        if failed:
            raise CheckpointError(self.path, f"process(es) {failed} could not read it")
        if not (everyone == everyone[0]).all():
            seen = "; ".join(
                f"process {i}: "
                + ("no checkpoint" if row[0] == 0 else f"next epoch {row[1]}")
                + ("" if (everyone[i] == everyone[0]).all() else " (differs from process 0)")
                for i, row in enumerate(epochs)
            )
            raise CheckpointError(
                self.path,
                f"the {len(everyone)} processes read different checkpoints or run different "
                f"settings ({seen}); every process must read the same file: put "
                "checkpoint_path on a file system that all of them share",
            )

    def _read_state(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        try:
            with open(self.path, "rb") as handle:
                if handle.read(len(_MAGIC)) != _MAGIC:
                    raise CheckpointError(
                        self.path,
                        "it is not a mtbkd_jax checkpoint (or one written by a version before "
                        f"format {_VERSION})",
                        foreign=True,
                    )
                digest = hashlib.blake2b(_MAGIC, digest_size=16)
                (size,) = np.frombuffer(hashed(digest, read_exactly(handle, 8)), dtype="<u8")
                header = hashed(digest, read_exactly(handle, int(size)))
                meta = json.loads(header.decode())
                if meta.get("version") != _VERSION:
                    raise CheckpointError(
                        self.path,
                        f"it was written in format version {meta.get('version')}, this "
                        f"version reads {_VERSION}",
                    )
                if "blake2b" not in meta["draws"]:
                    raise CheckpointError(
                        self.path,
                        "it was written by an earlier version of mtbkd_jax, whose checkpoints "
                        "carry no digests: its state and draws cannot be verified",
                    )
                leaves = []
                for dtype, shape in meta["leaves"]:
                    dtype = np.dtype(dtype)
                    data = read_exactly(handle, dtype.itemsize * math.prod(shape))
                    digest.update(data)
                    leaves.append(np.frombuffer(data, dtype=dtype).reshape(shape).copy())
                if read_exactly(handle, 16) != digest.digest():
                    raise CheckpointError(
                        self.path, "its bytes do not match the digest written with them (damaged)"
                    )
                self._state_digest = digest
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError) as error:
            raise CheckpointError(
                self.path,
                f"it is not a readable checkpoint (truncated, or another kind of file: "
                f"{type(error).__name__})",
            ) from None
        return meta, leaves

    def _read_draws(self, expected: str) -> dict[str, np.ndarray]:
        """The committed draws (name -> (chains, draws, ...)) if their digest is ``expected``,
        in one read and one hash pass; the writer drops bytes appended but never committed."""
        size = self.draws_path.stat().st_size if self.draws_path.exists() else 0
        if size < self._committed:
            raise CheckpointError(
                self.path,
                f"its draws file {self.draws_path.name} holds {size} bytes of the "
                f"{self._committed} the state committed (truncated or deleted)",
            )
        with open(self.draws_path, "rb") as handle:
            data = handle.read(self._committed)
        digest = hashlib.blake2b(data, digest_size=16)
        if digest.hexdigest() != expected:
            raise CheckpointError(
                self.path,
                f"the draws file {self.draws_path.name} does not match the state that "
                "committed it (another run's draws file, or bytes changed since)",
            )
        try:  # cannot fail after the digest matched, unless the writer was wrong
            collected = parse_draws(memoryview(data), self._sites or [])
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise CheckpointError(
                self.path, f"its draws file {self.draws_path.name} cannot be parsed: {error}"
            ) from None
        if size > self._committed and self.writer:  # appended but never committed: drop it
            with open(self.draws_path, "r+b") as handle:
                handle.truncate(self._committed)
        self._draws_digest = digest
        return collected

    def save_in_background(self, state: PyTree, chunk: dict, progress: dict) -> None:
        """:meth:`save` on a thread of its own, so that the write overlaps the next chunk's
        compute. Writes stay in order: this first waits for the previous one (and re-raises
        its error). The state is copied to the host before the thread starts. Only the
        ``writer`` (process 0) writes."""
        self.wait()
        if not self.writer:
            return
        host_state = jax.tree.map(np.asarray, state)

        def write() -> None:
            try:
                self.save(host_state, chunk, progress)
            except BaseException as error:  # re-raised by the next wait()
                self._error = error

        self._writer = threading.Thread(target=write, name="mtbkd-checkpoint", daemon=True)
        self._writer.start()

    def wait(self, *, raise_error: bool = True) -> None:
        """Wait for the write in progress, if any; raise its error, if it failed (unless
        ``raise_error`` is false: on the way out of a run that failed otherwise)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            if isinstance(error, OSError):  # a bare disk error, raised a chunk after its write
                error.add_note(
                    f"mtbkd_jax: raised by the background write of checkpoint {str(self.path)!r}; "
                    "it keeps the chunks written before, from which a rerun resumes"
                )
            raise error

    def wait_at_end(self) -> None:
        """Wait for a finished run's last write: one that failed (a full disk) is warned, not
        raised, since the run's posterior is complete (it was lost with the error); the file
        keeps the chunks written before, from which a rerun resumes."""
        try:
            self.wait()
        except OSError as error:
            warnings.warn(
                f"the run finished, but writing its last checkpoint to {str(self.path)!r} "
                f"failed ({error}): the posterior is returned, and a rerun would resume from "
                "the last chunk written before",
                RuntimeWarning,
                skip_file_prefixes=(str(Path(__file__).parents[1]),),
            )

    def save(self, state: PyTree, chunk: dict, progress: dict) -> None:
        """Append ``chunk`` (name -> array (chains, draws, ...)) and rewrite the state.

        Only the new draws are written; the state file, written last and atomically, commits
        them. Only process 0 (``writer``) writes; elsewhere this does nothing (it holds no
        collective, so the processes stay in step).
        """
        if not self.writer:
            return
        names = sorted(chunk)
        sites = [
            [n, chunk[n].dtype.str, [*chunk[n].shape[:1], -1, *chunk[n].shape[2:]]] for n in names
        ]
        if self._sites is not None and sites != self._sites:
            raise CheckpointError(
                self.path, f"chunk holds the sites {sites}, the run's draws are {self._sites}"
            )
        count = int(chunk[names[0]].shape[1]) if names else 0
        draws_digest = self._draws_digest.copy()  # the committed draws' and this chunk's
        mode = "r+b" if self.draws_path.exists() else "wb"
        with open(self.draws_path, mode) as handle:
            handle.seek(self._committed)
            handle.write(hashed(draws_digest, np.asarray([count], "<i8").tobytes()))
            for name in names:
                handle.write(hashed(draws_digest, np.ascontiguousarray(chunk[name]).tobytes()))
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
            committed = handle.tell()
        leaves = [np.ascontiguousarray(leaf) for leaf in jax.tree.leaves(state)]
        meta = {
            "version": _VERSION,
            "progress": progress,
            "leaves": [[leaf.dtype.str, list(leaf.shape)] for leaf in leaves],
            "draws": dict(committed_bytes=committed, sites=sites, blake2b=draws_digest.hexdigest()),
        }
        if self._fingerprint_json is None:  # serialised once: it does not change in a run
            assert self.fingerprint is not None, "set the run's fingerprint before save"
            self._fingerprint_json = self.fingerprint.to_json_text()
        header = (
            '{"fingerprint": ' + self._fingerprint_json + ", " + json.dumps(meta)[1:]
        ).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            head = _MAGIC + np.asarray([len(header)], dtype="<u8").tobytes() + header
            state_digest = hashlib.blake2b(head, digest_size=16)
            with open(tmp, "wb") as handle:
                handle.write(head)
                for leaf in leaves:
                    handle.write(hashed(state_digest, leaf.tobytes()))
                handle.write(state_digest.digest())
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.path)  # a crash before this line leaves the previous state intact
        finally:
            tmp.unlink(missing_ok=True)
        self._committed = committed
        self._sites = sites
        self._draws_digest = draws_digest


def _checked_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint's path, its folder created and writable (checked before any compute)."""
    return prepare_output_file(path, "checkpoint_path")
