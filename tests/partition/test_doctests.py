"""The examples in partition/'s docstrings run as written (``fin.fin``'s plan of a tiny model)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import finplan.partition

MODULES = sorted(m.name for m in pkgutil.iter_modules(finplan.partition.__path__, "finplan.partition."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


def test_fin_carries_a_runnable_example():
    from finplan.partition import fin

    test = doctest.DocTestFinder().find(fin.fin, "fin", globs={"fin": fin.fin})[0]
    wants = "".join(example.want for example in test.examples)
    # the example plans, and checks the placement, the energy and latency, and the guarantee
    assert "['phone', 'edge']" in wants and "0.40432 J, 11.32 ms" in wants and "True" in wants
    assert doctest.DocTestRunner().run(test).failed == 0
