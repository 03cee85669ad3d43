"""Warnings raised while an experiment fits one method, named by that method's row.

An experiment fits a dozen methods in one call; a :class:`~mtbkd_jax.infer.ConvergenceWarning`
("the MAP's loss ended above where it started") says nothing useful unless it says which row it
is about. :func:`named_by_method` re-issues each warning raised inside it with the row's label
in front, same category, same place, through the warning filters in force (so ``"ignore"``,
``"error"`` and ``-W`` act on it as on the original).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["named_by_method"]


@contextlib.contextmanager
def named_by_method(label: str) -> Iterator[None]:
    """Re-issue every warning raised in the block as ``"[label] message"``, each distinct one
    once (as Python's default filter shows a warning once per place: a tuning search's many
    fits do not repeat the same line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for record in caught:
        key = (record.category, str(record.message), record.filename, record.lineno)
        if key in seen:
            continue
        seen.add(key)
        warnings.warn_explicit(
            f"[{label}] {record.message}",
            record.category,
            record.filename,
            record.lineno,
            source=record.source,
        )
