"""Reading and writing finplan's documents: JSON or YAML in, versioned schemas, atomic writes.

Every document carries ``"schema": "finplan.<kind>/<major>"``. Readers accept only the
majors they know; writers always go through a temporary file and a rename, so a crash or
a bad input never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from finplan.errors import FinplanInputError


def schema_id(kind: str, major: int = 1) -> str:
    return f"finplan.{kind}/{major}"


def load_document(path: str | os.PathLike, kind: str, majors: tuple[int, ...] = (1,)) -> dict:
    """Read a JSON or YAML document and check its ``schema`` field names ``kind``.

    Raises FinplanInputError when the file is missing, unparsable, not a mapping, or of
    another kind or an unknown major version.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FinplanInputError("file not found", file=path) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise FinplanInputError(f"cannot read as text ({exc.__class__.__name__})", file=path) from None
    doc = parse_text(text, path)
    check_schema(doc, kind, majors, path)
    return doc


_YAML_LOADER = None
# YAML 1.2's floats (1e9, 1E-3, .5e3, 6.7e-8, ...) on top of YAML 1.1's (PyYAML's: 1.0e+9,
# 1_000.5, 190:20:30.15, .inf, .nan): PyYAML reads "1e9" (no dot, no exponent sign) as a string.
_YAML_FLOAT = r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$"""


def yaml_loader():
    """PyYAML's SafeLoader reading YAML 1.2 floats as numbers too (see _YAML_FLOAT); built once."""
    global _YAML_LOADER
    if _YAML_LOADER is None:
        import re

        import yaml

        class Loader(yaml.SafeLoader):
            pass

        float_tag = "tag:yaml.org,2002:float"
        Loader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != float_tag]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        Loader.add_implicit_resolver(float_tag, re.compile(_YAML_FLOAT, re.X), list("-+0123456789."))
        _YAML_LOADER = Loader
    return _YAML_LOADER


def load_yaml(text: str) -> Any:
    """Parse YAML the way every finplan file is read (safe; YAML 1.2 floats are numbers)."""
    import yaml

    return yaml.load(text, Loader=yaml_loader())  # noqa: S506 (a SafeLoader subclass)


def parse_text(text: str, path: str | os.PathLike) -> Any:
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            doc = load_yaml(text)
        else:
            doc = json.loads(text)
    except Exception as exc:  # json and yaml raise different types; both mean "not parsable"
        first_line = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise FinplanInputError(f"not valid {'YAML' if suffix in ('.yaml', '.yml') else 'JSON'} ({first_line})", file=path) from None
    return doc


def check_schema(doc: Any, kind: str, majors: tuple[int, ...], path: str | os.PathLike | None) -> None:
    if not isinstance(doc, dict):
        raise FinplanInputError(f"expected a mapping with schema '{schema_id(kind)}'", file=path)
    schema = doc.get("schema")
    if schema is None:
        raise FinplanInputError(f"missing; expected '{schema_id(kind, majors[-1])}'", file=path, field="schema")
    prefix = f"finplan.{kind}/"
    if not isinstance(schema, str) or not schema.startswith(prefix):
        raise FinplanInputError(f"is {schema!r}; expected a '{prefix}<major>' document", file=path, field="schema")
    major = schema[len(prefix):]
    if not major.isdigit() or int(major) not in majors:
        known = ", ".join(schema_id(kind, m) for m in majors)
        raise FinplanInputError(f"{schema!r} is an unknown version; this finplan reads {known}", file=path, field="schema")


def to_json_text(doc: Any) -> str:
    """Deterministic JSON: sorted keys where order does not matter is the caller's choice;
    here we keep insertion order, fixed indentation and a trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FinplanInputError("cannot write: the folder does not exist", file=path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise FinplanInputError(f"cannot write ({exc.strerror})", file=path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise FinplanInputError(f"cannot write ({exc.strerror})", file=path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, doc: Any) -> Path:
    return atomic_write_text(path, to_json_text(doc))


def require_writable(path: str | os.PathLike) -> Path:
    """Fail early (before long work) when ``path`` cannot be written later."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FinplanInputError("cannot write: the folder does not exist", file=path)
    if not os.access(parent, os.W_OK):
        raise FinplanInputError("cannot write: the folder is not writable", file=path)
    if path.is_dir():
        raise FinplanInputError("cannot write: a folder stands at this path", file=path)
    return path


def finite_number(value: Any, *, file, field: str, positive: bool = False, nonnegative: bool = False) -> float:
    """Validate one number read from a file: finite, and positive/non-negative if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FinplanInputError(f"is {value!r}; expected a number", file=file, field=field)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise FinplanInputError(f"is {value}; expected a finite number", file=file, field=field)
    if positive and number <= 0:
        raise FinplanInputError(f"is {value}; expected a number > 0", file=file, field=field)
    if nonnegative and number < 0:
        raise FinplanInputError(f"is {value}; expected a number >= 0", file=file, field=field)
    return number
