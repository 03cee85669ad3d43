"""Checkpoints of long runs: a state pytree plus the draws so far, written atomically.

A checkpoint is one ``.npz`` file: the flattened leaves of the run state, the draws and flags
collected so far, and a JSON fingerprint of the run's settings. Resuming checks the fingerprint
so that a checkpoint is never continued with other settings, data or seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, *, fingerprint: dict, state, collected: dict, progress: dict) -> None:
    """Write ``state`` (any pytree), ``collected`` (name -> array) and ``progress`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"collected_{k}": np.asarray(v) for k, v in collected.items()})
    arrays["meta"] = np.asarray(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "progress": progress,
                "num_leaves": len(leaves),
                "collected": sorted(collected),
            }
        )
    )
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(path, *, fingerprint: dict, like_state):
    """Read a checkpoint written by :func:`save_checkpoint` for the same run.

    Args:
        path: the checkpoint file.
        fingerprint: the current run's settings; must equal the stored one.
        like_state: a pytree with the state's structure (its leaves are replaced).

    Returns:
        ``(state, collected, progress)``, or ``None`` when there is no checkpoint file.

    Raises:
        ValueError: if the checkpoint belongs to a run with other settings.
    """
    path = Path(path)
    if not path.exists():
        return None
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        if meta["fingerprint"] != json.loads(json.dumps(fingerprint)):
            stored, current = meta["fingerprint"], json.loads(json.dumps(fingerprint))
            changed = sorted(
                k for k in set(stored) | set(current) if stored.get(k) != current.get(k)
            )
            raise ValueError(
                f"checkpoint {path} belongs to a run with other settings ({', '.join(changed)}); "
                "delete it or pass another checkpoint_path"
            )
        leaves = [data[f"state_{i}"] for i in range(meta["num_leaves"])]
        collected = {k: data[f"collected_{k}"] for k in meta["collected"]}
    state = jax.tree.unflatten(jax.tree.structure(like_state), leaves)
    return state, collected, meta["progress"]
