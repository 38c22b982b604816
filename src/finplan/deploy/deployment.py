"""A deployment folder as a whole: index, plan, network, profiles and node folders.

Runtimes load nodes with ``NodeRuntime``; this module reads what is shared (the plan's
predictions, the network's links, the profiles) for the executor, the report and verify.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from finplan.deploy.emit_build import DEPLOYMENT_FILE, NETWORK_FILE, PLAN_FILE
from finplan.deploy.manifest import (
    MANIFEST_FILE,
    TensorSpec,
    load_manifest,
    sha256_file,
)
from finplan.errors import FinplanInputError
from finplan.links import Link
from finplan.validation import read_document

RERUN = "re-run finplan emit (a deployment folder is emitted, not edited)"


@dataclass
class Deployment:
    folder: Path
    index: dict          # deployment.json
    plan: dict           # plan.json
    application: dict    # the deployed application's entry in the plan
    network: dict        # network.json
    links: dict[tuple[str, str], Link]
    profiles: dict[str, list[tuple[str, dict]]]  # node -> [(path, profile document)]

    @property
    def name(self) -> str:
        return self.index["application"]

    @property
    def nodes(self) -> list[str]:
        return list(self.index["nodes"])

    @property
    def source(self) -> str:
        return self.index["source"]

    @property
    def entry_node(self) -> str:
        return self.index["entry_node"]

    @property
    def model_hash(self) -> str | None:
        return self.index["model"].get("hash")

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """The graph inputs, in graph order (a legacy index: its one ``input``)."""
        listed = self.index["inputs"] if "inputs" in self.index else [self.index["input"]]
        return tuple(TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"]) for spec in listed)

    @property
    def input_spec(self) -> TensorSpec:
        """The first graph input (the sole one of a single-input model)."""
        return self.input_specs[0]

    def node_folder(self, node: str) -> Path:
        return self.folder / node

    def num_classes(self) -> int | None:
        """Classes the exit heads score (their last axis), so labels can be checked against it;
        None when a head's width is symbolic or the heads disagree."""
        widths = set()
        for node in self.nodes:
            for stage in load_manifest(self.node_folder(node)).stages:
                outputs = {t.name: t for t in stage.outputs}
                for exit_ in stage.exits:
                    spec = outputs.get(exit_.output)
                    widths.add(spec.shape[-1] if spec is not None and spec.shape else None)
        (width,) = widths if len(widths) == 1 else (None,)
        return width if isinstance(width, int) and width > 0 else None

    def network_node(self, node: str) -> dict:
        for item in self.network.get("nodes", []):
            if item.get("name") == node:
                return item
        return {}

    def link(self, src: str, dst: str, *, field: str = "links") -> Link:
        if (src, dst) not in self.links:
            raise FinplanInputError(f"has no link {src} -> {dst}, which the deployment uses",
                                    file=self.folder / NETWORK_FILE, field=field)
        return self.links[(src, dst)]


def _as_json(value) -> str:
    """A value as the file spells it (null, not None) in messages about JSON files."""
    return json.dumps(value, default=str)


def load_deployment(folder: str | os.PathLike) -> Deployment:
    """Read the shared files of a deployment folder, each through its shipped schema
    (deployment, manifest, plan, network, profile); raises FinplanInputError naming file and field."""
    from finplan.hardware_profiles import load_profile

    folder = Path(folder)
    if not folder.is_dir():
        raise FinplanInputError("deployment folder not found" if not folder.exists() else "is not a folder", file=folder)
    index_path = folder / DEPLOYMENT_FILE
    # the schema says what each field holds; what follows, what it cannot: the folders, hashes
    # and the agreement of the index with the manifests and the plan
    index = read_document(index_path, "deployment", hint=RERUN)
    for node in index["nodes"]:
        if not (folder / node).is_dir():
            raise FinplanInputError(f"node folder {node!r} is missing", file=index_path, field="nodes")
    check_recorded_hashes(folder, index)
    _check_index_against_manifests(folder, index)
    plan = read_document(folder / PLAN_FILE, "plan", hint=RERUN)
    application = next((a for a in plan.get("applications", []) if a.get("name") == index["application"]), None)
    if application is None:
        raise FinplanInputError(f"has no application {index['application']!r} (named by {DEPLOYMENT_FILE})",
                                file=folder / PLAN_FILE, field="applications")
    _check_index_against_plan(folder, index, plan, application)
    network_path = folder / NETWORK_FILE
    network = read_document(network_path, "network", hint=RERUN)
    links = {(ld["from"], ld["to"]): Link(ld["from"], ld["to"], float(ld["bandwidth_bps"]), float(ld.get("latency_s", 0.0)),
                                          float(ld["energy_j_per_bit"]))
             for ld in network.get("links", [])}
    profiles: dict[str, list[tuple[str, dict]]] = {}
    for i, nd in enumerate(network.get("nodes", [])):
        refs = nd.get("profile")
        if refs is None:
            continue
        listed = refs if isinstance(refs, list) else [refs]
        for j, ref in enumerate(listed):
            path = folder / ref
            if not path.is_file():
                raise FinplanInputError(f"profile {ref!r} is missing from the deployment folder", file=network_path,
                                        field=f"nodes[{i}].profile")
            profiles.setdefault(nd.get("name"), []).append((str(path), load_profile(path)))
    return Deployment(folder, index, plan, application, network, links, profiles)


def check_recorded_hashes(folder: Path, index: dict) -> None:
    """Refuse a deployment whose plan, network, profiles or manifests differ from what emit wrote
    (``deployment.json`` ``sha256``): a hand-edited threshold or model hash would otherwise run
    silently, and the report would compare the run with a plan that no longer describes it.

    An edited manifest is first checked for what is wrong in it (schema, fields, its parts'
    tensors), so that the message names the field when it can."""
    from finplan.deploy.part_checks import check_parts_statically

    index_path = folder / DEPLOYMENT_FILE
    recorded = index["sha256"]  # a mapping of hex digests: the schema says so (an older finplan's folder has none)
    manifests = {f"{node}/{MANIFEST_FILE}": node for node in index["nodes"]}
    for rel in [PLAN_FILE, NETWORK_FILE, *manifests]:
        if rel not in recorded:
            raise FinplanInputError(f"has no entry for {rel}; {RERUN}", file=index_path, field="sha256")
    for rel, digest in recorded.items():
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise FinplanInputError(f"names {rel!r}; expected a path inside the deployment folder", file=index_path,
                                    field="sha256")
        path = folder / rel
        if not path.is_file():
            raise FinplanInputError(f"is missing (deployment.json lists it); {RERUN}", file=path)
        if sha256_file(path) != digest:
            if rel in manifests:
                manifest = load_manifest(folder / manifests[rel])  # a malformed field names itself
                check_parts_statically(manifest, folder / manifests[rel])  # so does a tensor the parts disagree with
            raise FinplanInputError(f"was altered after finplan emit: its sha256 differs from the one deployment.json "
                                    f"records; {RERUN}", file=path)


def _check_index_against_plan(folder: Path, index: dict, plan: dict, application: dict) -> None:
    """``deployment.json``'s fields that repeat the (hash-checked) plan must agree with it, so an
    edit is blamed on deployment.json rather than surfacing later as a missing link or a wrong exit."""
    index_path = folder / DEPLOYMENT_FILE
    placement_nodes = list(dict.fromkeys(p.get("node") for p in application.get("placement") or []))
    expected = {"source": application.get("source"), "final_exit": application.get("final_exit"),
                "mode": (plan.get("options") or {}).get("mode"), "nodes": placement_nodes}
    for key, value in expected.items():
        if key in index and value is not None and index[key] != value:
            raise FinplanInputError(f"is {json.dumps(index[key])}, but plan.json says {json.dumps(value)}; {RERUN}",
                                    file=index_path, field=key)


def _check_index_against_manifests(folder: Path, index: dict) -> None:
    """``deployment.json``'s own fields that repeat the (hash-checked) manifests must agree with them:
    the input runtimes are fed with, and the exits and thresholds verify decides with."""
    index_path = folder / DEPLOYMENT_FILE
    manifests = {node: load_manifest(folder / node) for node in index["nodes"]}
    entry = index["entry_node"]
    if entry not in manifests:
        raise FinplanInputError(f"is {entry!r}, which is not one of nodes ({', '.join(manifests)}); {RERUN}",
                                file=index_path, field="entry_node")
    key = "inputs" if "inputs" in index else "input"
    listed = index[key] if key == "inputs" else [index[key]]
    expected = manifests[entry].inputs
    if len(listed) != len(expected) or any(  # specs, as the schema says; are they the entry node's?
            spec["name"] != want.name or spec["dtype"] != want.dtype or spec["shape"] != list(want.shape)
            for spec, want in zip(listed, expected)):
        raise FinplanInputError(f"is {_as_json(index[key])}, but node {entry!r} takes "
                                f"{', '.join(t.describe() for t in expected)}; {RERUN}", file=index_path, field=key)
    exits = {e.name: e.threshold for node in manifests.values() for stage in node.stages for e in stage.exits}
    listed = index.get("active_exits")
    if listed is not None:
        named = {e["name"]: (None if e["threshold"] is None else float(e["threshold"])) for e in listed}
        if named != exits:
            held = ", ".join(f"{n} ({'final' if t is None else t})" for n, t in exits.items())
            raise FinplanInputError(f"lists {_as_json(listed)}, but the manifests hold exits {held}; {RERUN}",
                                    file=index_path, field="active_exits")
