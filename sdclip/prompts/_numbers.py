"""Weight arithmetic shared by the syntaxes: every weight a parser returns is a finite float."""

from __future__ import annotations

import math
import sys


def saturating_mul(a: float, b: float) -> float:
    """``a * b``, saturating at ``±sys.float_info.max`` so that finite weights stay finite.

    Example:
        >>> saturating_mul(1e300, 1e300) == sys.float_info.max
        True
    """
    product = a * b
    if math.isinf(product):
        return math.copysign(sys.float_info.max, product)
    return product


def finite_float(literal: str) -> float | None:
    """``float(literal)`` when that is a finite number, else None (``"inf"``, ``"1e400"``, ``"."``).

    Example:
        >>> finite_float(" 1.5 "), finite_float("1e400"), finite_float("x")
        (1.5, None, None)
    """
    try:
        value = float(literal)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
