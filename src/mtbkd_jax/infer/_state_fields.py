"""Kernel states that name a missing field.

NumPyro's ``MCMC`` reads an ``extra_fields`` path such as ``"kernel.momentum"`` by attribute,
then by key; on a NamedTuple a field that is not there fell through to ``tuple["name"]`` and
reached the user as "tuple indices must be integers or slices, not str". Each kernel state
sets ``__getitem__ = field_by_name`` so the error names the field and the fields there are,
and is decorated with :func:`fields_only`, so that ``"kernel.count"`` or ``"index"`` (a
tuple's methods, which the attribute read found) take the same path instead of reaching JAX
as "<built-in method count ...> is not a valid JAX array type".
"""

from __future__ import annotations

from typing import Any

__all__ = ["field_by_name", "fields_only"]


def field_by_name(self: tuple, key: Any) -> Any:
    """``tuple.__getitem__``, except that a string key reads that field, and one that names no
    field (a tuple method such as ``index`` included) is a ValueError naming the fields."""
    if isinstance(key, str) and key in getattr(self, "_fields", ()):
        return getattr(self, key)
    if isinstance(key, str):
        fields = ", ".join(getattr(self, "_fields", ()))
        raise ValueError(
            f"extra_fields: the kernel's state {type(self).__name__} has no field {key!r}; "
            f"its fields are {fields} (a nested path reads 'kernel.<field>')"
        )
    return tuple.__getitem__(self, key)


_TUPLE_METHODS = ("count", "index")


class _NotAField:
    """A class attribute that hides a tuple method from attribute reads: reading it from an
    instance is an AttributeError, so ``extra_fields`` falls through to ``__getitem__``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        raise AttributeError(f"{owner.__name__ if owner else 'state'} has no field {self.name!r}")


def fields_only(cls: type) -> type:
    """Hide ``count`` and ``index`` on the state ``cls`` (a NamedTuple whose fields these are
    not), so that reading them is the missing-field error of its ``__getitem__``."""
    for name in _TUPLE_METHODS:
        if name not in getattr(cls, "_fields", ()):
            setattr(cls, name, _NotAField(name))
    return cls
