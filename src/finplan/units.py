"""Numbers with their units, as finplan prints them: the one place for bytes, SI prefixes, durations, shapes.

A base module (it imports nothing of finplan), so the planner, the profiler, the CLI and the
file readers all print a size or a time the same way. Each function takes ``missing``, what
to print for None (a value a document leaves out), so a table cell needs no test of its own.

>>> si(0.00123, "s"), decimal_bytes(186600), grouped(1234567), ms(0.00532), duration(8.21), shape_text((1, 8, 8))
('1.23 ms', '186.6 kB', '1,234,567', '5.32 ms', '8.21 s', '1x8x8')
"""
from __future__ import annotations

SI_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def shape_text(dims, *, unknown: str = "?", empty: str = "()") -> str:
    """A tensor shape as sizes joined by "x"; ``unknown`` for a size ONNX cannot tell, ``empty`` for a scalar.

    >>> shape_text((1, 32, 32)), shape_text(["batch", None, 10]), shape_text(()), shape_text((), empty="scalar")
    ('1x32x32', 'batchx?x10', '()', 'scalar')
    """
    return "x".join(unknown if d is None else str(d) for d in dims) if len(dims) else empty


def si(value: float | None, unit: str, sep: str = " ", *, missing: str = "-") -> str:
    """``value`` with an SI prefix (n to G) and three significant digits.

    >>> si(2.5e-6, "J"), si(1.5e9, "FLOP"), si(0.0123, "s", sep=""), si(0, "s"), si(None, "s")
    ('2.5 µJ', '1.5 GFLOP', '12.3ms', '0 s', '-')
    """
    if value is None:
        return missing
    for factor, prefix in SI_PREFIXES:
        if abs(value) >= factor:
            return f"{value / factor:.3g}{sep}{prefix}{unit}"
    return f"{value:.3g}{sep}{unit}"


def grouped(count: float | None, *, missing: str = "-") -> str:
    """A count (of bytes, of values) as an integer with thousands separators.

    >>> grouped(1234567), grouped(12.0), grouped(None, missing="?")
    ('1,234,567', '12', '?')
    """
    return missing if count is None else f"{int(count):,}"


def decimal_bytes(count: float | None, *, missing: str = "-") -> str:
    """A byte count in a sentence: decimal units (B, kB, MB, GB), one decimal above bytes.

    >>> decimal_bytes(186600), decimal_bytes(512), decimal_bytes(3.2e12), decimal_bytes(None)
    ('186.6 kB', '512 B', '3200.0 GB', '-')
    """
    if count is None:
        return missing
    if abs(count) < 1000:
        return f"{count:.0f} B"
    for unit in ("kB", "MB"):
        count /= 1000.0
        if abs(count) < 1000:
            return f"{count:.1f} {unit}"
    return f"{count / 1000.0:.1f} GB"


def binary_bytes(count: int) -> str:
    """A size limit in binary units (KiB, MiB, GiB, as file systems count), one decimal.

    >>> binary_bytes(64 * 1024 ** 2), binary_bytes(1536), binary_bytes(100)
    ('64.0 MiB', '1.5 KiB', '100 bytes')
    """
    for factor, unit in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} bytes"


def ms(seconds: float | None, spec: str = ".4g", *, missing: str = "-") -> str:
    """Seconds as milliseconds in a sentence; ``spec`` formats the number (four significant digits).

    >>> ms(0.00532), ms(0.0123456, ".2f"), ms(None)
    ('5.32 ms', '12.35 ms', '-')
    """
    return missing if seconds is None else f"{seconds * 1e3:{spec}} ms"


def duration(seconds: float | None, *, missing: str = "-") -> str:
    """A solve time: milliseconds below one second, else seconds (8.21 s, not 8.21e+03 ms).

    >>> duration(0.0421), duration(0.9996), duration(8.21), duration(None)
    ('42.1 ms', '1 s', '8.21 s', '-')
    """
    if seconds is not None and seconds * 1e3 >= 999.5:  # would print as "1e+03 ms"
        return f"{seconds:.3g} s"
    return ms(seconds, ".3g", missing=missing)
