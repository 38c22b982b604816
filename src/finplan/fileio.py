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
from finplan.units import binary_bytes


def schema_id(kind: str, major: int = 1) -> str:
    return f"finplan.{kind}/{major}"


def load_document(path: str | os.PathLike, kind: str, majors: tuple[int, ...] = (1,)) -> dict:
    """Read a JSON or YAML document and check its ``schema`` field names ``kind``.

    Raises FinplanInputError when the file is missing, unparsable, not a mapping, or of
    another kind or an unknown major version.
    """
    path = Path(path)
    text = read_input_text(path)
    doc = parse_text(text, path)
    check_schema(doc, kind, majors, path)
    reject_non_finite(doc, path)
    return doc


# ---------------------------------------------------------------- bounded, one-line readers
#
# Every file finplan reads goes through require_input_file (a folder where a file is expected,
# a missing file and an oversized file each get their own line) and then one reader per format
# that turns whatever the parser raises into one FinplanInputError line. The caps are module
# constants so that a test (or a site with bigger files) can change them in one place.

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024   # a JSON document: a card of 100k calibration samples is ~10 MB
MAX_YAML_BYTES = 8 * 1024 * 1024        # a YAML file is written by a person; PyYAML reads ~1 MB/s
MAX_YAML_NODES = 1_000_000              # values after alias expansion ("billion laughs" stops here)
MAX_ARRAY_BYTES = 8 * 1024 ** 3         # an .npz, uncompressed (a zip bomb is refused before inflating)
MAX_ONNX_BYTES = 2 * 1024 ** 3          # protobuf's own limit for one message


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one, else all):
    the bound of every thread count finplan starts."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def require_input_file(path: str | os.PathLike, *, max_bytes: int | None = None, what: str = "file",
                       label: str | os.PathLike | None = None, field: str | None = None) -> Path:
    """``path`` as a Path when it is a readable regular file of at most ``max_bytes``; else one
    FinplanInputError naming it (``label`` if given) and saying which of those it is not."""
    path = Path(path)
    name = path if label is None else label
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FinplanInputError("file not found", file=name, field=field) from None
    except OSError as exc:
        raise FinplanInputError(f"cannot read ({exc.strerror or exc.__class__.__name__})", file=name, field=field) from None
    import stat

    if stat.S_ISDIR(info.st_mode):
        raise FinplanInputError(f"is a folder; expected a {what}", file=name, field=field)
    if not stat.S_ISREG(info.st_mode):
        raise FinplanInputError(f"is not a regular file; expected a {what}", file=name, field=field)
    if max_bytes is not None and info.st_size > max_bytes:
        raise FinplanInputError(f"is {binary_bytes(info.st_size)}; finplan reads a {what} of at most "
                                f"{binary_bytes(max_bytes)}", file=name, field=field)
    if not os.access(path, os.R_OK):
        raise FinplanInputError("cannot read (permission denied)", file=name, field=field)
    return path


def read_input_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a JSON or YAML document, within the size cap of its format."""
    path = Path(path)
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    require_input_file(path, max_bytes=MAX_YAML_BYTES if is_yaml else MAX_DOCUMENT_BYTES,
                       what="YAML file" if is_yaml else "JSON file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FinplanInputError("cannot read as text (not UTF-8); expected a JSON or YAML document", file=path) from None
    except OSError as exc:
        raise FinplanInputError(f"cannot read ({exc.strerror or exc.__class__.__name__})", file=path) from None


def load_npz(path: str | os.PathLike, *, label: str | os.PathLike | None = None) -> dict:
    """Every array of an ``.npz`` file as ``{name: ndarray}``, with one line for anything that is
    not an archive of numeric arrays: a folder, a missing or corrupt file (not a zip, a truncated
    member), pickled objects, or more than MAX_ARRAY_BYTES once inflated (checked on the zip's
    directory before anything is inflated)."""
    import zipfile

    import numpy as np

    name = path if label is None else label
    path = require_input_file(path, max_bytes=MAX_ARRAY_BYTES, what=".npz file", label=name)
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FinplanInputError(f"cannot read as a .npz archive ({exc.__class__.__name__}: {_first_line(exc)}); "
                                "expected a file written by numpy.savez", file=name) from None
    if inflated > MAX_ARRAY_BYTES:
        raise FinplanInputError(f"holds {binary_bytes(inflated)} of arrays once inflated; finplan reads at most "
                                f"{binary_bytes(MAX_ARRAY_BYTES)}", file=name)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile, zlib, numpy's format reader: all mean "not numeric arrays"
        raise FinplanInputError(f"cannot read as a .npz of numeric arrays ({exc.__class__.__name__}: "
                                f"{_first_line(exc)})", file=name) from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a member without a .npy header
            raise FinplanInputError(f"member {key!r} is not a .npy array; expected a file written by numpy.savez",
                                    file=name, field=key)
    return arrays


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text.strip() else exc.__class__.__name__


def reject_non_finite(value: Any, path, where: str = "") -> None:
    """Refuse NaN and infinities anywhere in a document (YAML's .nan/.inf and Python's JSON
    reader accept them; finplan never writes them), naming the field."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise FinplanInputError(f"is {item}; expected a finite number", file=path, field=at or "(document)")
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(item))))


def is_note_field(key: Any) -> bool:
    """``description`` and ``x-...``: free text a person keeps in a file, never read by finplan."""
    return key == "description" or str(key).startswith("x-")


def without_notes(value: Any) -> Any:
    """A copy of ``value`` without note fields (see is_note_field) at any depth: notes stay in
    the file a person wrote and are not copied into what finplan writes (a 5 MB note made every
    plan 5 MB larger and its writing and checking slow)."""
    if isinstance(value, dict):
        return {k: without_notes(v) for k, v in value.items() if not is_note_field(k)}
    if isinstance(value, list):
        return [without_notes(v) for v in value]
    return value


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
    """JSON or YAML (by suffix) -> Python; one line naming the line and column of a syntax
    error, and a cap on YAML alias expansion (MAX_YAML_NODES)."""
    suffix = Path(path).suffix.lower()
    is_yaml = suffix in (".yaml", ".yml")
    kind = "YAML" if is_yaml else "JSON"
    try:
        doc = load_yaml(text) if is_yaml else json.loads(text)
    except RecursionError:
        raise FinplanInputError(f"not valid {kind} (nested too deeply)", file=path) from None
    except Exception as exc:  # json and yaml raise different types; both mean "not parsable"
        raise FinplanInputError(f"not valid {kind} ({_syntax_error(exc)})", file=path) from None
    if is_yaml:
        check_expansion(doc, path)
    return doc


def _syntax_error(exc: Exception) -> str:
    """'line L, column C: problem' for json's and PyYAML's errors (both 1-based here)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem or _first_line(exc)}"
    return _first_line(exc)


def check_expansion(doc: Any, path, limit: int | None = None) -> None:
    """Refuse a document whose YAML aliases expand to more than ``limit`` values (default
    MAX_YAML_NODES) or refer to themselves. PyYAML shares one object per anchor, so reading is
    cheap; what comes after (schema checks, copies, JSON output) would expand every alias.
    Counted per distinct object with memoised sizes: linear in the file, not in the expansion."""
    limit = MAX_YAML_NODES if limit is None else limit
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise FinplanInputError("a YAML alias refers to a mapping or list that contains it; expected a tree",
                                    file=path)
        active.add(key)
        children = value.values() if isinstance(value, dict) else value
        total = 1 + (len(value) if isinstance(value, dict) else 0)
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        if total > limit:
            raise FinplanInputError(f"expands to more than {limit:,} values (YAML anchors and aliases); "
                                    "expected a plain document", file=path)
        return total

    try:
        size(doc)
    except RecursionError:
        raise FinplanInputError("not valid YAML (nested too deeply)", file=path) from None


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


def finite_number(value: Any, *, file, field: str, positive: bool = False, nonnegative: bool = False,
                  at_most: float | None = None) -> float:
    """Validate one number read from a file: finite, positive/non-negative and at most
    ``at_most`` if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FinplanInputError(f"is {value!r}; expected a number", file=file, field=field)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise FinplanInputError(f"is {value}; expected a finite number", file=file, field=field)
    if positive and number <= 0:
        raise FinplanInputError(f"is {value}; expected a number > 0", file=file, field=field)
    if nonnegative and number < 0:
        raise FinplanInputError(f"is {value}; expected a number >= 0", file=file, field=field)
    if at_most is not None and number > at_most:
        low = " > 0 and" if positive else (" >= 0 and" if nonnegative else "")
        raise FinplanInputError(f"is {value}; expected a number{low} <= {at_most:g}", file=file, field=field)
    return number


# ---------------------------------------------------------------- outputs never over inputs

def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def refuse_outputs_over_inputs(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Refuse, before anything is written, an output that is one of the inputs or a folder that
    holds one: ``outputs`` and ``inputs`` map the name to print (the caller's: a flag, an
    argument, "the plan's profile") to a path; None values are skipped.

    The same file is recognised by resolved path (symbolic links, ``..``) and by device and
    inode (hard links, bind mounts); a folder holds an input when it is one of the input's
    resolved parent folders, again by path or inode.
    """
    given_inputs = [(label, Path(p)) for label, p in inputs.items() if p is not None and str(p) != ""]
    resolved_inputs = [(label, p, p.resolve(), _inode(p)) for label, p in given_inputs]
    for out_label, out in outputs.items():
        if out is None or str(out) == "":
            continue
        out = Path(out)
        out_resolved, out_inode = out.resolve(), _inode(out)
        for in_label, in_path, in_resolved, in_inode in resolved_inputs:
            if out_resolved == in_resolved or (out_inode is not None and out_inode == in_inode):
                raise FinplanInputError(f"is the input {in_label} ({in_path}); an output never overwrites an input: "
                                        "choose another path", file=out, field=out_label)
            parents = list(in_resolved.parents)
            if out_resolved in parents or (out_inode is not None and any(_inode(p) == out_inode for p in parents)):
                raise FinplanInputError(f"holds the input {in_label} ({in_path}); writing this folder would replace it: "
                                        "choose another folder", file=out, field=out_label)


# ---------------------------------------------------------------- replacing a folder

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False when
    the system or file system cannot (then nothing was changed)."""
    import ctypes
    import ctypes.util
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder ``new`` at ``target`` (a sibling); an existing ``target`` is replaced.

    At every instant ``target`` is either the old folder or the new one: the two are exchanged
    in one atomic rename where the system can (Linux), and the old one is deleted afterwards;
    elsewhere the two renames run with SIGINT and SIGTERM held back, and a failure of the
    second puts the old folder back.
    """
    import shutil
    import signal

    new, target = Path(new), Path(target)
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if exchange_paths(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old.rmdir()
    held = {signal.SIGINT, signal.SIGTERM}
    blocked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held) if blocked else None
    try:
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)  # put the previous folder back
            raise
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    shutil.rmtree(old, ignore_errors=True)
