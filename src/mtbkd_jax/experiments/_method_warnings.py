"""Warnings raised while an experiment fits one method, named by that method's row.

An experiment fits a dozen methods in one call; a :class:`~mtbkd_jax.infer.ConvergenceWarning`
("the MAP's loss ended above where it started") says nothing useful unless it says which row it
is about. :func:`named_by_method` shows each warning raised inside it with the row's label in
front. It changes only how a warning is shown, not the filters: ``"ignore"``, ``"error"``
(raised where the warning is issued) and ``-W`` act as on any warning, and Python's default
filter still shows a warning once per place.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["named_by_method"]


@contextlib.contextmanager
def named_by_method(label: str) -> Iterator[None]:
    """Show every warning the block raises as ``"[label] message"``."""
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        shown(f"[{label}] {message}", category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
