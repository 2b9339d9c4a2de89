"""Strict JSON for reports: no NaN or Infinity (invalid JSON that browsers and jq refuse).

Its own module so the HTML page and the JSON report share it without importing their package back.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping


def clean_json(obj: Any) -> Any:
    """A copy that strict JSON parsers accept: NaN and infinities become null, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "tolist"):
        return clean_json(obj.tolist())
    return obj


def dumps_strict(obj: Any, **kw: Any) -> str:
    """JSON without NaN/Infinity (invalid JSON): the fast path first, a cleaned copy when needed."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(clean_json(obj), allow_nan=False, **kw)
