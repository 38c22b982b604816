"""``finplan cuts``: every candidate cut of an ONNX graph and what would cross it."""
from __future__ import annotations

import click
from rich import box
from rich.table import Table

from finplan.cli._console import print_json, stdout
from finplan.contract import load_onnx
from finplan.units import grouped, shape_text


@click.command("cuts")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--single", "single_only", is_flag=True, help="Only the cuts where one tensor (the cut tensor) crosses.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def command(model_path, single_only, as_json):
    """List every candidate cut of MODEL.onnx in execution order: the tensor, the op and module
    that produce it, its shape, and the live set (every tensor that would cross the cut) with its
    bytes per sample. "*" marks the natural cuts, where only the cut tensor itself crosses.

    Pick block tensors from this list, then write the contract with `finplan annotate`.

    \b
    Examples:
      finplan cuts model.onnx --single
      finplan cuts model.onnx --json | jq '.cuts[] | select(.ends | index("layer2"))'
      finplan annotate model.onnx --block relu_4 --block relu_8 --exit e1=block1:linear_1 \\
          --exit e2=block2:linear -o model.branchy.onnx
    """
    from finplan.cuts import candidate_cuts

    model = load_onnx(model_path)
    cuts = candidate_cuts(model)
    if single_only:
        cuts = [c for c in cuts if c.single]
    if as_json:
        print_json({"model": model_path, "cuts": [c.to_dict() for c in cuts]})
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True, pad_edge=False)
    for column in ("#", "", "tensor", "op", "module", "shape", "crosses", "bytes/sample"):
        table.add_column(column, justify="right" if column in ("#", "bytes/sample") else "left",
                         no_wrap=column in ("#", "tensor"))
    for cut in cuts:
        crosses = "-" if not cut.live_set else ("(itself)" if cut.single else
                                                " + ".join(f"{t.name} {grouped(t.bytes_per_sample, missing='?')}" for t in cut.live_set))
        # "end of M": the outermost module whose last node this is (cut here to cut "after M")
        module = f"end of {cut.ends[-1]}" if cut.ends else (cut.module or "-")
        table.add_row(str(cut.position), "*" if cut.single else "", cut.tensor, cut.op, module,
                      shape_text(cut.shape, empty=""), crosses, grouped(cut.live_set_bytes, missing="?"))
    stdout.print(table)
    stdout.print(f"{len(cuts)} cut(s); * = only the cut tensor crosses (a natural block boundary). "
                 "Module paths come from the exporter's node metadata (torch.onnx: pkg.torch.onnx.name_scopes).")
