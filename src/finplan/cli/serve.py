"""``finplan serve``: run a deployment folder on Ray Serve (needs the [ray] extra)."""
from __future__ import annotations

import signal
import time

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from finplan.cli._console import foreign_output_to_stderr, print_json, stdout
from finplan.cli._types import Threads


@click.command("serve")
@click.argument("folder", metavar="DEPLOY/", type=click.Path())
@click.option("--address", default=None,
              help="HOST:PORT of a running Ray cluster's head. Default: start a local Ray instance with one "
                   "labelled Ray node per plan node (stopped on exit).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HTTP endpoint binds to.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="HTTP port. Default: a free port for a local instance, 8000 on a cluster.")
@click.option("--replicas", "replicas", multiple=True, metavar="NODE=N", help="Replicas of a node's deployment (repeatable).")
@click.option("--placement", type=click.Choice(["label", "resource"]), default="label", show_default=True,
              help="Pin a node's deployment by Ray node label finplan-node=NODE, or by custom resource finplan-node:NODE.")
@click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Per-request timeout (a request still unanswered then gets 504).")
@click.option("--max-request-bytes", type=click.IntRange(min=1), default=16 * 1024 * 1024, show_default=True,
              help="Larger requests get 413.")
@click.option("--max-concurrent-requests", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Requests the ingress admits at once (per replica); as many again may wait in Serve's queue, more get 503.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Samples a stage runs at once: requests waiting for a stage run as one batch; the samples that "
                   "exit there are answered, only the rest go on (1: no batching).")
@click.option("--batch-wait-s", type=click.FloatRange(min=0), default=0.001, show_default=True,
              help="Under load, how long a stage waits for its batch to fill (a lone request never waits).")
@click.option("--threads", type=Threads(), default=None,
              help="onnxruntime intra-op threads per replica (1 .. this machine's CPUs).")
@click.option("--emulate-links", is_flag=True, help="Delay each forward by the network's link model (one-machine demos).")
@click.option("--start-timeout-s", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Give up when the application is not ready by then.")
@click.option("--for-s", "for_s", type=click.FloatRange(min=0), default=None,
              help="Stop by itself after this many seconds (default: until Ctrl-C).")
@click.option("--dry-run", is_flag=True, help="Print the application (deployments, placement, routes); start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(folder, address, host, port, replicas, placement, timeout_s, max_request_bytes, max_concurrent_requests,
            max_batch_size, batch_wait_s, threads, emulate_links, start_timeout_s, for_s, dry_run, as_json):
    """Serve a deployment folder: one Ray Serve deployment per plan node, pinned to its Ray node.

    \b
    On one machine (a local Ray instance, one labelled Ray node per plan node):
      finplan serve deploy/
    Across machines (on each: ray start --address HEAD:6379 --labels finplan-node=NODE):
      finplan serve deploy/ --address HEAD:6379 --host 0.0.0.0
    Then: finplan infer http://127.0.0.1:PORT/APPLICATION --data embedded
    """
    from finplan.deploy.ray_serve.graph import build_graph, parse_replicas

    graph = build_graph(folder, replicas=parse_replicas(replicas), placement=placement, timeout_s=timeout_s,
                        max_request_bytes=max_request_bytes, threads=threads, emulate_links=emulate_links,
                        max_concurrent_requests=max_concurrent_requests, max_batch_size=max_batch_size,
                        batch_wait_s=batch_wait_s)
    if dry_run:
        if as_json:
            print_json(graph.describe())
        else:
            _print_graph(graph)
        return
    from finplan.deploy.ray_serve.cluster import ServeSession, require_ray

    require_ray()  # one line (exit 2) when the [ray] extra is missing, before anything starts

    stop = {"signal": None}

    def on_term(signum, frame):  # SIGTERM stops like Ctrl-C: the application and any Ray we started go away
        stop["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    session = ServeSession(graph, address=address, host=host, port=port, start_timeout_s=start_timeout_s)
    try:
        with foreign_output_to_stderr() as real_stdout, session:
            info = {"url": session.url, "application": graph.application, "ray": address or "local (started by finplan)",
                    "serve_mode": session.mode, **graph.describe()}
            if as_json:
                print_json(info, file=real_stdout)
            else:
                out = Console(file=real_stdout, highlight=False, soft_wrap=True)
                out.print(f"[bold]serving[/bold] {escape(str(folder))} at {session.url}")
                out.print(f"Ray: {escape(info['ray'])}; Serve mode: {escape(session.mode)}; placement by {graph.placement.mode}; "
                          f"timeout {timeout_s:g} s; max request {max_request_bytes} bytes; "
                          f"at most {max_concurrent_requests} requests at once; batches of up to {max_batch_size} "
                          f"samples per stage (wait {batch_wait_s * 1e3:g} ms under load)")
                _print_graph(graph, out)
                out.print(f"try: finplan infer {session.url} --data embedded    (Ctrl-C stops)")
            try:
                if for_s is None:
                    while True:
                        time.sleep(3600)
                else:
                    time.sleep(for_s)
            except KeyboardInterrupt:
                pass
            if not as_json:
                click.echo("stopping: deleting the application" + (" and the local Ray instance" if address is None else ""),
                           err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_graph(graph, out: Console = stdout) -> None:
    table = Table(title=f"application {graph.app_name} (route {graph.route_prefix})", title_justify="left")
    for column in ("deployment", "plan node", "placement", "replicas", "forwards to"):
        table.add_column(column)
    rows = [(graph.ingress.deployment, graph.ingress.node, graph.ingress.actor_options, graph.ingress.num_replicas,
             {graph.ingress.entry_node: graph.ingress.entry_deployment})]
    rows += [(s.deployment, s.node, s.actor_options, s.num_replicas, s.routes) for s in graph.stages.values()]
    for name, node, options, count, routes in rows:
        where = ", ".join(f"{k}={v}" for k, v in (options.get("label_selector") or options.get("resources") or {}).items())
        table.add_row(name, node, where, str(count), ", ".join(routes.values()) or "-")
    out.print(table)
    inputs = ", ".join(spec.describe() for spec in graph.ingress.input_specs)
    out.print(escape(f"input{'s' if len(graph.ingress.input_specs) > 1 else ''}: {inputs}; chain: {' -> '.join(graph.chain)}"))


def engine_overhead_table(report: dict) -> Table | None:
    """The engine's measured per-hop cost beside the link model's prediction (``finplan run --engine ray``)."""
    from finplan.deploy.ray_serve.runner import engine_overhead_rows

    rows = engine_overhead_rows(report.get("engine_overhead_s") or {})
    if not rows:
        return None
    table = Table(title="Engine overhead per hop (measured)",
                  title_justify="left")
    for column in ("hop", "engine mean", "engine p50", "link model"):
        table.add_column(column, justify="left" if column == "hop" else "right")
    ms = (lambda v: "-" if v is None else f"{v * 1e3:.3f} ms")
    for row in rows:
        table.add_row(escape(row["hop"]), ms(row["engine_s"]), ms(row["engine_p50_s"]), ms(row["link_model_s"]))
    return table


def print_engine_overhead(report: dict) -> None:
    """For ``finplan run --engine ray``: print the per-hop table and say what it means."""
    table = engine_overhead_table(report)
    if table is None:
        return
    stdout.print(table)
    if report.get("engine") == "ray-compiled":
        what = ("the compiled graph's one-way delivery per hop (sender's send to receiver's receipt: channel, "
                "serialisation; between machines also the real network and the clocks' offset)")
    else:
        what = ("Ray Serve's cost per hop (round trip minus the next node's own time: serialisation, routing, "
                "scheduling; between machines also the real network)")
    stdout.print(f"  note: engine overhead is {what}, not device latency; the link model is the plan's "
                 "bytes*8/bandwidth + latency")
