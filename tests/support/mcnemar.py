"""McNemar's exact test with exact fractions: the tests' own arithmetic, to check the
leaderboard's against."""

from __future__ import annotations

import math
from fractions import Fraction


def exact_p(b: int, c: int) -> float:
    n, low = b + c, min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(low + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))
