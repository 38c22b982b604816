"""finplan.units: the one set of formatters (bytes, SI prefixes, durations) every printer uses."""
from __future__ import annotations

import ast
import doctest
from pathlib import Path

import pytest

import finplan
from finplan import units


def test_the_doctests_pass():
    result = doctest.testmod(units, verbose=False)
    assert result.attempted >= 7 and result.failed == 0


@pytest.mark.parametrize("value,unit,sep,expected", [
    (0.000123, "s", " ", "123 µs"), (12_300_000, "FLOP", " ", "12.3 MFLOP"), (4.2e-10, "J", " ", "4.2e-10 J"),
    (-0.002, "J", "", "-2mJ"), (999.6, "s", " ", "1e+03 s"), (1.0, "", "", "1"),
])
def test_si_prefixes(value, unit, sep, expected):
    assert units.si(value, unit, sep) == expected


@pytest.mark.parametrize("count,expected", [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (999_949, "999.9 kB"),
                                            (1_000_000, "1.0 MB"), (2.5e9, "2.5 GB"), (-1500, "-1.5 kB")])
def test_decimal_bytes_at_each_step(count, expected):
    assert units.decimal_bytes(count) == expected


def test_durations_switch_to_seconds_where_milliseconds_would_round_to_a_thousand():
    assert units.duration(0.9994) == "999 ms" and units.duration(0.9995) == "1 s"
    assert units.ms(1.23456) == "1235 ms" and units.ms(1.234e-5, ".2f") == "0.01 ms"


def test_binary_bytes_as_the_readers_limits_say_them():
    assert [units.binary_bytes(n) for n in (8 * 1024 ** 3, 64 * 1024 ** 2, 1024, 1023)] == \
        ["8.0 GiB", "64.0 MiB", "1.0 KiB", "1023 bytes"]


def test_no_second_formatter_is_defined_elsewhere():
    """The helpers the units module replaced stay gone (one of each, issue 13)."""
    old = {"_si", "_bytes", "_ms", "human_bytes", "ms", "duration", "_size_text", "shape_text"}
    root = Path(finplan.__file__).parent
    found = [f"{path.relative_to(root)}:{node.name}"
             for path in root.rglob("*.py") if path.name != "units.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.FunctionDef) and node.name in old]
    assert found == []
