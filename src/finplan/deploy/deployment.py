"""A deployment folder as a whole: index, plan, network, profiles and node folders.

Runtimes load nodes with ``NodeRuntime``; this module reads what is shared (the plan's
predictions, the network's links, the profiles) for the executor, the report and verify.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from finplan.deploy.emit import DEPLOYMENT_FILE, NETWORK_FILE, PLAN_FILE
from finplan.deploy.manifest import TensorSpec
from finplan.errors import FinplanInputError
from finplan.fileio import load_document
from finplan.links import Link


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
    def input_spec(self) -> TensorSpec:
        spec = self.index["input"]
        return TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"])

    def node_folder(self, node: str) -> Path:
        return self.folder / node

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


def _number(value, *, file, field) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FinplanInputError(f"is {value!r}; expected a number >= 0", file=file, field=field)
    return float(value)


def load_deployment(folder: str | os.PathLike) -> Deployment:
    """Read the shared files of a deployment folder; raises FinplanInputError naming file and field."""
    from finplan.hardware_profiles import load_profile

    folder = Path(folder)
    if not folder.is_dir():
        raise FinplanInputError("deployment folder not found" if not folder.exists() else "is not a folder", file=folder)
    index = load_document(folder / DEPLOYMENT_FILE, "deployment")
    for key in ("application", "model", "source", "entry_node", "input", "nodes"):
        if key not in index:
            raise FinplanInputError("missing; expected a folder written by finplan emit", file=folder / DEPLOYMENT_FILE, field=key)
    plan = load_document(folder / PLAN_FILE, "plan")
    application = next((a for a in plan.get("applications", []) if a.get("name") == index["application"]), None)
    if application is None:
        raise FinplanInputError(f"has no application {index['application']!r} (named by {DEPLOYMENT_FILE})",
                                file=folder / PLAN_FILE, field="applications")
    network_path = folder / NETWORK_FILE
    network = load_document(network_path, "network")
    links = {}
    for i, ld in enumerate(network.get("links", [])):
        where = f"links[{i}]"
        bw = _number(ld.get("bandwidth_bps"), file=network_path, field=f"{where}.bandwidth_bps")
        if bw <= 0:
            raise FinplanInputError(f"is {bw}; expected a number > 0", file=network_path, field=f"{where}.bandwidth_bps")
        links[(ld.get("from"), ld.get("to"))] = Link(
            ld.get("from"), ld.get("to"), bw, _number(ld.get("latency_s", 0.0), file=network_path, field=f"{where}.latency_s"),
            _number(ld.get("energy_j_per_bit", 0.0), file=network_path, field=f"{where}.energy_j_per_bit"))
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
    for node in index["nodes"]:
        if not (folder / node).is_dir():
            raise FinplanInputError(f"node folder {node!r} is missing", file=folder / DEPLOYMENT_FILE, field="nodes")
    return Deployment(folder, index, plan, application, network, links, profiles)
