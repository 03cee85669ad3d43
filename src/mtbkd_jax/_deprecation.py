"""Old spellings kept for one release, each with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["renamed_keywords", "warn_renamed"]

_F = TypeVar("_F", bound=Callable[..., Any])


def warn_renamed(old: str, new: str, *, stacklevel: int = 3, hint: str = "") -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (``stacklevel`` counts from the
    caller of this function: 3 points at the code that called the caller; ``hint`` is added
    in parentheses)."""
    message = f"{old} is deprecated; use {new}" + (f" ({hint})" if hint else "")
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(owner: str, hint: str = "", **renames: str) -> Callable[[_F], _F]:
    """Accept each old keyword ``old=`` of the decorated function as its new name
    ``renames[old]``, with a ``DeprecationWarning`` that points at the caller (and says
    ``hint``, e.g. what the new name means where the old one could be misread).

    Giving both spellings is a ``TypeError``. The wrapper keeps the function's signature
    (``inspect.signature`` shows the new names only).
    """

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{owner}() got both {old}= (deprecated) and {new}=; pass {new}= only"
                        )
                    warn_renamed(f"{owner}({old}=)", f"{new}=", hint=hint)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return cast(_F, wrapper)

    return decorate
