"""Kernel states that name a missing field.

NumPyro's ``MCMC`` reads an ``extra_fields`` path such as ``"kernel.momentum"`` by attribute,
then by key; on a NamedTuple a field that is not there fell through to ``tuple["name"]`` and
reached the user as "tuple indices must be integers or slices, not str". Each kernel state
sets ``__getitem__ = field_by_name`` so the error names the field and the fields there are.
"""

from __future__ import annotations

from typing import Any

__all__ = ["field_by_name"]


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
