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


def _public_functions():
    import ast
    from pathlib import Path

    folder = Path(finplan.partition.__file__).parent
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                yield path.name, node, ast.get_docstring(node) or "", ast.get_source_segment(text, node) or ""


def test_every_public_function_has_numpydoc_sections():
    """numpydoc's shape for every public function of partition/: Parameters (when it takes
    any), Returns (unless it returns None), Raises (when its body raises), Notes with the
    complexity."""
    import ast

    missing = []
    for module, node, doc, source in _public_functions():
        sections = ["Notes\n-----"]
        args = node.args
        if args.args or args.kwonlyargs or args.vararg or args.kwarg:
            sections.append("Parameters\n----------")
        returns_none = isinstance(node.returns, ast.Constant) and node.returns.value is None
        if not returns_none:
            sections.append("Returns\n-------")
        if "\n    raise " in source or "\n        raise " in source or "            raise " in source:
            sections.append("Raises\n------")
        lacking = [s.split("\n")[0] for s in sections if s not in doc]
        if "Complexity" not in doc and "O(" not in doc:
            lacking.append("complexity")
        if lacking:
            missing.append(f"{module}:{node.name} lacks {', '.join(lacking)}")
    assert not missing, "\n".join(missing)


def test_the_fin_citation_is_written_once_and_correctly():
    from pathlib import Path

    folder = Path(finplan.partition.__file__).parent
    title = "Resource-aware Deployment of\n       Dynamic DNNs over Multi-tiered Interconnected Systems"
    texts = {path.name: path.read_text() for path in folder.glob("*.py")}
    assert sum("Interconnected Systems" in text for text in texts.values()) == 1
    fin_text = texts["fin.py"]
    assert title in fin_text and "IEEE INFOCOM 2024" in fin_text
    assert "Singhal, Wu, Malandrino, Levorato, Chiasserini" in fin_text
