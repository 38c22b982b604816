"""``finplan exits``: build, train and export branchy models (needs the [torch] extra).

Argument handling only; the work is in finplan.exits and finplan.data. torch is imported
inside the commands, so ``finplan exits --help`` works without it and a missing torch is
one clear line.
"""
from __future__ import annotations

import click

from finplan import textdata
from finplan.errors import EnvironmentFault, FinplanInputError

MODEL_NAMES = ("b-lenet", "b-alexnet", "b-resnet", "b-bert")  # kept in step with finplan.exits.zoo.MODELS (tested)
TEXT_MODEL_NAMES = ("b-bert",)  # token ids + attention mask; kept in step with finplan.exits.zoo.TEXT_MODELS (tested)
DEFAULT_SHAPES = "b-lenet 1x28x28, b-alexnet 1x32x32, b-resnet 3x32x32, b-bert 16 (tokens)"
TEXT_SAMPLES = 2000  # size of the generated keywords task (train + calibration)
TORCH_MISSING = "`finplan exits` needs torch, which this Python does not have"
TORCH_CHECK = "the [torch] extra: pip install 'finplan[torch]'"


def _require_torch():
    try:
        import torch  # noqa: F401
        import finplan.exits as exits
    except ImportError as exc:
        if getattr(exc, "name", None) in ("torch", "onnxscript") or "torch" in str(exc):
            raise EnvironmentFault(TORCH_MISSING, check=TORCH_CHECK) from None
        raise
    return exits


def _model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise FinplanInputError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}", field="--model")
    return name


def _numbers(text: str | None, option: str, kind=float) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise FinplanInputError(f"{text!r} is not a comma-separated list of numbers", field=option) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Build, train and export branchy (early-exit) models.

    \b
    Example (the recipe of the embedded default model, then a tiny B-BERT on the keywords task):
      finplan exits train --model b-alexnet --data digits --input-shape 1x32x32 \\
          --epochs 10 --seed 0 --exit-weights 1,1,1 -o model.onnx --calib-out calib.npz
      finplan exits train --model b-bert --data keywords --epochs 8 -o bert.onnx --calib-out bert-calib.npz
      finplan exits export --model b-lenet --input-shape 1x28x28 -o lenet.onnx
    """


@command.command()
@click.option("--model", "model_name", default="b-alexnet", show_default=True,
              help=f"Zoo model: {', '.join(MODEL_NAMES)}.")
@click.option("--data", "data_source", default=None,
              help="digits (default), fashion-mnist, a .npz (x, y) or a folder with one subfolder per class; "
                   "b-bert: keywords (default, generated from --seed) or a .npz (input_ids, attention_mask, y).")
@click.option("--input-shape", default=None, help=f"Model input without the batch axis, CxHxW (default: {DEFAULT_SHAPES}).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the weights, the data split and the batch order.")
@click.option("--exit-weights", default=None, help="Loss weight per exit, comma-separated (default: 1 for every exit).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--num-classes", default=None, type=click.IntRange(min=2), help="Default: largest label + 1.")
@click.option("--channels", default=None, help="Channel widths, comma-separated (see the zoo's defaults).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="Use at most this many training samples.")
@click.option("-o", "--output", required=True, type=str, help="ONNX file to write.")
@click.option("--calib-out", default=None, type=str, help="Also write the calibration split (.npz).")
@click.option("--checkpoint-out", default=None, type=str, help="Also write a torch checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
def train(model_name, data_source, input_shape, epochs, seed, exit_weights, batch_size, lr, num_classes, channels,
          limit, output, calib_out, checkpoint_out, quiet):
    """Train a zoo model jointly on all exits, then export it to ONNX with its contract.

    \b
    Example:
      finplan exits train --model b-alexnet --data digits --epochs 10 --seed 0 \\
          --input-shape 1x32x32 --exit-weights 1,1,1 -o model.onnx --calib-out calib.npz
      finplan exits train --model b-bert --data keywords --epochs 8 --seed 0 -o bert.onnx --calib-out bert-calib.npz
    """
    from finplan.fileio import require_writable

    for path in (output, calib_out, checkpoint_out):
        if path is not None:
            require_writable(path)
    from finplan.cli._outputs import existing, refuse_outputs_over_inputs

    outputs = {"-o": output, "--calib-out": calib_out, "--checkpoint-out": checkpoint_out}
    refuse_outputs_over_inputs(outputs, {"--data": existing(data_source)})
    _model_name(model_name)
    weights = _numbers(exit_weights, "--exit-weights")
    widths = _numbers(channels, "--channels", int)
    exits = _require_torch()
    shape = _shape(exits, model_name, input_shape)
    data_source = data_source or _default_data(model_name)

    train_data = _load(model_name, data_source, shape, "train", seed, limit, num_classes)
    calibration = _load(model_name, data_source, shape, "calibration", seed, None, num_classes)
    for part in (train_data, calibration):
        if part.y is None:
            raise FinplanInputError("has no labels (y); training needs them", file=data_source, field="y")
    if num_classes is None:
        num_classes = max(2, int(max(train_data.y.max(), calibration.y.max())) + 1)
    model = exits.build_model(model_name, input_shape=shape, num_classes=num_classes, channels=widths, seed=seed)
    if weights is not None and (len(weights) != len(model.heads) or min(weights) < 0 or sum(weights) <= 0):
        raise FinplanInputError(f"{exit_weights!r}: expected {len(model.heads)} non-negative weights (one per exit of "
                                f"{model_name}), not all zero", field="--exit-weights")

    from finplan.cli._console import progress_bar, stderr, stdout

    with progress_bar(quiet) as report:
        def on_batch(epoch, done, total):
            report("training", (epoch - 1) * total + done, epochs * total)

        def on_epoch(epoch_report):
            if not quiet:
                accuracy = "  ".join(f"{name} {value:.3f}" for name, value in zip(model.exit_names,
                                                                                  epoch_report.eval_accuracy))
                # through rich's console, so the line lands above a live progress bar
                stderr.print(f"epoch {epoch_report.epoch}/{epochs}  loss {epoch_report.loss:.3f}  "
                             f"calibration accuracy: {accuracy}", soft_wrap=True)

        exits.train(model, train_data, epochs=epochs, seed=seed, exit_weights=weights, batch_size=batch_size, lr=lr,
                    eval_data=calibration, on_batch=on_batch, on_epoch=on_epoch)
    metrics = exits.evaluate(model, calibration)
    result = exits.export_onnx(model, output, _arrays(calibration))
    if calib_out is not None:
        _save(calibration, calib_out)
    if checkpoint_out is not None:
        exits.save_checkpoint(model, checkpoint_out)

    stdout.print(f"trained {model_name} on {data_source} ({len(train_data)} samples, {epochs} epochs, seed {seed}); "
                 f"calibration split: {len(calibration)} samples")
    for index, exit_ in enumerate(result.contract.exits):
        stdout.print(f"  {exit_.name} after {exit_.after}: accuracy {metrics.accuracy[index]:.4f}, "
                     f"confident (max softmax >= {metrics.confidence_threshold}) on "
                     f"{metrics.confident_share[index]:.1%}")
    _print_export(stdout, result)
    if calib_out is not None:
        names = ", ".join(calibration.inputs) if hasattr(calibration, "inputs") else "x"
        stdout.print(f"wrote {calib_out} (calibration split: {names}, y)")
    if checkpoint_out is not None:
        stdout.print(f"wrote {checkpoint_out} (checkpoint)")


@command.command()
@click.option("--model", "model_name", default="b-alexnet", show_default=True,
              help=f"Zoo model: {', '.join(MODEL_NAMES)}.")
@click.option("--checkpoint", default=None, type=str,
              help="Weights from `finplan exits train --checkpoint-out` (default: untrained, seeded weights).")
@click.option("--input-shape", default=None, help=f"CxHxW (default: the model's own: {DEFAULT_SHAPES}).")
@click.option("--num-classes", default=None, type=click.IntRange(min=2), help="Default: 10 (b-bert: 4, the keywords task).")
@click.option("--channels", default=None, help="Channel widths, comma-separated.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the untrained weights.")
@click.option("--data", "data_source", default=None,
              help="Real inputs to compare ONNX with torch on (calibration split; default digits, b-bert keywords).")
@click.option("-o", "--output", required=True, type=str, help="ONNX file to write.")
def export(model_name, checkpoint, input_shape, num_classes, channels, seed, data_source, output):
    """Export a zoo model (untrained or from a checkpoint) to ONNX with its finplan contract.

    \b
    Example:
      finplan exits export --model b-lenet --input-shape 1x28x28 -o lenet.onnx
      finplan exits export --model b-alexnet --checkpoint ckpt.pt -o model.onnx
      finplan exits export --model b-bert --channels 32,4,2 -o bert.onnx
    """
    from finplan import data as datasets
    from finplan.fileio import require_writable

    require_writable(output)
    from finplan.cli._outputs import existing, refuse_outputs_over_inputs

    refuse_outputs_over_inputs({"-o": output}, {"--checkpoint": checkpoint, "--data": existing(data_source)})
    _model_name(model_name)
    widths = _numbers(channels, "--channels", int)
    exits = _require_torch()
    data_source = data_source or _default_data(model_name)
    if num_classes is None:
        num_classes = textdata.NUM_CLASSES if model_name in TEXT_MODEL_NAMES else 10
    if checkpoint is not None:
        model = exits.load_checkpoint(checkpoint, model_name=model_name)
        if input_shape is not None and datasets.parse_shape(input_shape) != model.input_shape:
            raise FinplanInputError(f"the checkpoint's input shape is {'x'.join(map(str, model.input_shape))}, "
                                    f"not {input_shape}", file=checkpoint, field="--input-shape")
    else:
        shape = _shape(exits, model_name, input_shape)
        model = exits.build_model(model_name, input_shape=shape, num_classes=num_classes, channels=widths, seed=seed)
    check = _load(model_name, data_source, model.input_shape, "calibration", seed, 64, None)
    result = exits.export_onnx(model, output, _arrays(check))

    from finplan.cli._console import stdout

    _print_export(stdout, result)


def _shape(exits, model_name: str, text: str | None) -> tuple[int, ...]:
    from finplan import data as datasets

    return exits.DEFAULT_INPUT_SHAPES[model_name] if text is None else datasets.parse_shape(text)


def _default_data(model_name: str) -> str:
    return "keywords" if model_name in TEXT_MODEL_NAMES else "digits"


def _load(model_name, source, shape, split, seed, limit, num_classes):
    """Image models: ``load_data``. Text models: the generated keywords task, or a .npz named after the
    inputs (``load_model_data``), split by ``seed``."""
    from finplan import data as datasets

    if model_name not in TEXT_MODEL_NAMES:
        return datasets.load_data(source, shape, split=split, seed=seed, limit=limit, num_classes=num_classes)
    import numpy as np

    if source != "keywords":
        specs = [datasets.InputSpec(name, np.dtype(np.int64), tuple(shape)) for name in textdata.INPUT_NAMES]
        return datasets.load_model_data(source, specs, split=split, seed=seed, limit=limit, num_classes=num_classes)
    try:
        arrays = textdata.keywords(TEXT_SAMPLES, seed=seed, seq_len=shape[0])
    except ValueError as exc:
        raise FinplanInputError(str(exc), field="--input-shape") from None
    train_part, held_out = textdata.split(arrays, datasets.CALIBRATION_FRACTION, seed=seed)
    chosen = {"train": train_part, "calibration": held_out, "all": arrays}[split]
    if num_classes is not None and chosen["y"].max() >= num_classes:
        raise FinplanInputError(f"labels go up to {int(chosen['y'].max())}; expected fewer than --num-classes "
                                f"{num_classes}", file=source, field="y")
    data = datasets.ModelData({name: chosen[name] for name in textdata.INPUT_NAMES}, chosen["y"], "keywords")
    return data if limit is None else data.take(slice(0, limit))


def _arrays(data):
    """What export_onnx checks against torch: the input arrays by name (or the one x)."""
    return data.inputs if hasattr(data, "inputs") else data.x


def _save(data, path) -> None:
    from finplan import data as datasets

    if hasattr(data, "inputs"):
        textdata.save({**data.inputs, "y": data.y}, path)
    else:
        datasets.save_dataset(data, path)


def _print_export(console, result) -> None:
    blocks = ", ".join(b.name for b in result.contract.blocks)
    exits = ", ".join(f"{e.name} (after {e.after})" for e in result.contract.exits)
    console.print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB, opset {result.opset}, {result.model_hash[:19]}...)")
    console.print(f"  blocks: {blocks}")
    console.print(f"  exits: {exits}")
    console.print(f"  onnxruntime vs torch on {result.check_samples} inputs: max abs diff {result.max_abs_diff:.2e} "
                  f"(limit {result.max_abs_diff_limit:g})")
