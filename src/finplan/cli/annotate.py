"""``finplan annotate``: write a validated finplan contract into a copy of a plain ONNX model."""
from __future__ import annotations

import os
from pathlib import Path

import click

from finplan.cli._console import print_json, stdout
from finplan.errors import FinplanInputError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are one file: the same resolved path, or (links) the same inode."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # b does not exist yet
        return False


@click.command("annotate")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--block", "blocks", multiple=True, required=True, metavar="[NAME=]TENSOR",
              help="Block boundary tensor, in execution order (repeat; see `finplan cuts`).")
@click.option("--exit", "exits", multiple=True, required=True, metavar="NAME=BLOCK:TENSOR",
              help="Exit head: its class-score output [batch, classes] and the block it follows (repeat).")
@click.option("-o", "--output", "output", required=True, metavar="OUT.onnx", help="Where to write the annotated copy.")
@click.option("--json", "as_json", is_flag=True, help="Print the written contract as JSON.")
def command(model_path, blocks, exits, output, as_json):
    """Write the contract described by --block and --exit into a copy of MODEL.onnx.

    The contract is validated first (tensors exist, blocks in execution order, each block and
    exit head can be cut out from what crosses the cut before it, exits are class scores);
    nothing is written when it is not. The graph is copied unchanged (same model hash).

    \b
    Example:
      finplan cuts resnet.onnx --single
      finplan annotate resnet.onnx --block relu_4 --block relu_8 --block linear \\
          --exit exit1=block1:linear_1 --exit final=block3:linear -o resnet.branchy.onnx
      finplan inspect resnet.branchy.onnx
    """
    from finplan.contract import contract_from_cli, load_onnx, validate_contract, write_contract
    from finplan.fileio import atomic_write_bytes, require_writable

    if same_file(model_path, output):
        raise FinplanInputError("is the input model; annotate writes a copy, give another path", file=output,
                                field="-o")
    require_writable(output)
    model = load_onnx(model_path)
    contract = contract_from_cli(model, list(blocks), list(exits), file=model_path)
    validate_contract(model, contract, file=model_path, where="the --block/--exit contract")
    write_contract(model, contract)
    atomic_write_bytes(output, model.SerializeToString())
    if as_json:
        print_json({"model": model_path, "output": output, "contract": contract.to_dict()})
        return
    stdout.print(f"wrote {output}: {len(contract.blocks)} block(s), {len(contract.exits)} exit(s), "
                 f"input(s) {', '.join(contract.inputs)}")
