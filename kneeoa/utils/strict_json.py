"""Strict JSON for every file and progress line we write: NaN/Infinity are not JSON, so they become null.

`json.dumps` writes bare `NaN`/`Infinity` by default, which strict readers (browsers, jq, most languages)
refuse. Every JSON we emit goes through `dumps`, which maps non-finite floats to None and then serialises
with `allow_nan=False`, so a non-finite value that slipped through is an error here, not a broken file later.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """numpy/torch scalars and arrays -> plain Python values (recursively); NaN/Inf -> None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite_or_none(obj.tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that never writes NaN/Infinity (they become null); other objects -> str."""
    kwargs.setdefault("default", str)
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
