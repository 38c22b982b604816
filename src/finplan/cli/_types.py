"""click parameter types shared by the commands."""
from __future__ import annotations

import math

import click


class FiniteNonNegative(click.FloatRange):
    """A finite number >= 0. FloatRange alone lets "nan" and "inf" through: a NaN tolerance
    silently turns every check off (each comparison with NaN is false), an infinite one does
    so openly and cannot be written to JSON; both are refused as bad input."""
    name = "number"

    def __init__(self):
        super().__init__(min=0)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; expected a number >= 0", param, ctx)
        return number
