"""The experiments' JSON outputs as strict JSON: a non-finite number is written as ``null``.

Python's :mod:`json` writes ``NaN`` and ``Infinity`` by default, which no JSON standard
allows: JavaScript's ``JSON.parse``, ``jq`` and most other readers refuse the whole file. A
row's figure can be non-finite legitimately (a teacher that gives probability 0 to a test
label has an infinite NLL; the error-detection AUROC of a row without errors is undefined), so
such a value is written as ``null`` (pandas reads it as NaN), and ``table.md`` keeps showing
it as ``inf`` or ``nan``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["strict_json", "write_json"]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts, lists and tuples) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` as indented strict JSON (non-finite numbers as ``null``)."""
    path.write_text(json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")
