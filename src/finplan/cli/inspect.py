"""``finplan inspect``: the blocks and exits of a branchy ONNX model."""
from __future__ import annotations

import click
from rich.table import Table

from finplan.cli._console import print_json, stdout
from finplan.contract import load_branchy_model, model_hash
from finplan.onnx_parts import describe_branchy
from finplan.units import grouped, shape_text


@click.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--block", "blocks", multiple=True, metavar="[NAME=]TENSOR",
              help="Block boundary tensor, in order (for models without a finplan contract).")
@click.option("--exit", "exits", multiple=True, metavar="NAME=BLOCK:TENSOR", help="Exit head output after a block.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(model_path, blocks, exits, as_json):
    """Show the blocks and exits of a branchy ONNX model, with shapes and sizes.

    \b
    Examples:
      finplan inspect model.onnx
      finplan inspect plain.onnx --block /layer1/Relu_output_0 --block logits \\
          --exit exit1=block1:/head1/Gemm_output_0 --exit exit2=block2:logits
    """
    model, contract = load_branchy_model(model_path, blocks=list(blocks), exits=list(exits))
    summary = {"model": model_path, "hash": model_hash(model), "contract": contract.to_dict(),
               **describe_branchy(model, contract)}
    if as_json:
        print_json(summary)
        return
    stdout.print(f"[bold]{model_path}[/bold]  {summary['hash'][:19]}…")
    for tensor in summary["inputs"]:
        stdout.print(f"input {tensor['name']!r}  {tensor['dtype']}  shape {shape_text(tensor['shape'], empty='')}  "
                     f"{grouped(tensor['bytes'])} bytes per sample")
    for title, rows in (("Blocks", summary["blocks"]), ("Exits", summary["exits"])):
        table = Table(title=title, title_justify="left")
        for column in ("name", "after", "output", "output shape", "params bytes", "output bytes/sample"):
            if column == "after" and title == "Blocks":
                continue
            table.add_column(column, justify="right" if "bytes" in column else "left")
        if title == "Blocks":
            table.add_column("crossing bytes/sample", justify="right")
        for r in rows:
            cells = [r["name"]] + ([r["after"]] if title == "Exits" else [])
            cells += [r["output"], shape_text(r["output_shape"], empty=""), grouped(r["params_bytes"]),
                      grouped(r["output_bytes"])]
            if title == "Blocks":
                cells.append(grouped(r["live_set_bytes"]) if r["live_set"] else "-")
            table.add_row(*cells)
        stdout.print(table)
    # what a transfer after each block carries, tensor by tensor (its live set)
    table = Table(title="Crossing each cut (the live set after a block)", title_justify="left")
    for column in ("after", "tensor", "dtype", "shape", "bytes/sample"):
        table.add_column(column, justify="right" if "bytes" in column else "left")
    for r in summary["blocks"][:-1]:
        for t in r["live_set"]:
            table.add_row(r["name"], t["name"], t["dtype"], shape_text(t["shape"], empty=""), grouped(t["bytes"]))
    stdout.print(table)
