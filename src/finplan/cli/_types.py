"""click parameter types shared by the commands."""
from __future__ import annotations

import math

import click

from finplan.fileio import available_cpus  # the bound is shared with the runtimes


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



class Threads(click.ParamType):
    """An onnxruntime thread count: 1 up to the CPUs this machine offers. More starts threads
    that only wait for a CPU, and tens of thousands of them exhausted the process table
    (another run's onnxruntime session then failed with ``pthread_create failed``)."""
    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            count = value
        else:
            try:
                count = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an integer; expected a thread count", param, ctx)
        cpus = available_cpus()
        if not 1 <= count <= cpus:
            self.fail(f"is {count}; this machine offers {cpus} CPU{'s' if cpus != 1 else ''} to finplan: expected "
                      f"1..{cpus}", param, ctx)
        return count
