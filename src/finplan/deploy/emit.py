"""Turn one application of a plan into a deployment folder: per-node ONNX parts and manifests.

See docs/deployment-format.md for the folder layout and the manifest format. Three steps:
check (``emit_check``: the plan against the model, hash, block and exit names, links, the
output folder; every refusal happens here, before anything is built), build (``emit_build``:
the whole deployment in memory, pure) and write (here: a temporary sibling folder, the index's
hashes, one swap into place), so a failure never leaves a half-written deployment behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from finplan.deploy.emit_build import (DEPLOYMENT_FILE, DEPLOYMENT_SCHEMA, NETWORK_FILE, PLAN_FILE, PROFILES_DIR,
                                       DeploymentBuild, build_deployment, plan_stages)
from finplan.deploy.emit_check import Target, check_emit
from finplan.deploy.manifest import sha256_bytes
from finplan.errors import FinplanInputError
from finplan.fileio import replace_folder, to_json_text


@dataclass
class EmitResult:
    folder: Path
    application: str
    model_name: str
    model_hash: str
    nodes: list[dict]          # [{node, stages: [{part, blocks, exits}]}] in chain order
    warnings: list[str]


def emit(plan_path: str | os.PathLike, model_path: str | os.PathLike, out: str | os.PathLike, *,
         application: str | None = None, force: bool = False) -> EmitResult:
    """Write the deployment folder ``out`` for one application of the plan at ``plan_path``.

    Raises FinplanInputError (nothing written) for an infeasible plan, a plan for another
    model, an unknown application, or an existing ``out`` without ``force``.
    """
    inputs, target = check_emit(plan_path, model_path, out, application=application, force=force)
    built = build_deployment(inputs)
    write_deployment(built, target)
    return EmitResult(target.shown, inputs.name, inputs.model_name, inputs.model_hash, built.nodes, inputs.warnings)


def serialized(built: DeploymentBuild) -> dict[str, bytes]:
    """Every file of the deployment, path relative to its root -> bytes, the index with the
    hashes of the files it ties (what ``write_deployment`` writes)."""
    contents = dict(built.files)
    contents.update({rel: to_json_text(doc).encode("utf-8") for rel, doc in built.documents.items()})
    index = {**built.deployment, "sha256": {rel: sha256_bytes(contents[rel]) for rel in built.tied}}
    contents[DEPLOYMENT_FILE] = to_json_text(index).encode("utf-8")
    return contents


def write_deployment(built: DeploymentBuild, target: Target) -> None:
    """Write ``built`` into a temporary sibling of ``target.path``, then swap it into place
    (never a moment without a deployment there); the temporary folder is removed on failure."""
    out = target.path
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _chmod_like_mkdir(tmp)  # mkdtemp makes it 0700; the renamed folder should look like any other
    try:
        (tmp / PROFILES_DIR).mkdir()  # always there: the layout is the same with or without profiles
        for rel, data in serialized(built).items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.write_bytes(data)
            except OSError as exc:
                raise FinplanInputError(f"cannot write ({exc.strerror})", file=target.shown / rel) from None
        if out.exists() and not target.force:
            raise FinplanInputError("already exists; choose another folder or pass --force to replace it",
                                    file=target.shown)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _chmod_like_mkdir(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


__all__ = ["emit", "EmitResult", "plan_stages", "write_deployment", "serialized", "DEPLOYMENT_FILE",
           "DEPLOYMENT_SCHEMA", "PLAN_FILE", "NETWORK_FILE"]
