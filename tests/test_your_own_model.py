"""Models as users have them, end to end.

- The README section "Your own model": its three examples run as written (code blocks executed in
  order in one folder; only the profiler's time budget is shortened).
- Every architecture of issue 11 (torchvision resnet18, mobilenet_v2, VisionTransformer, a Hugging
  Face BertForSequenceClassification) and a U-Net-style model with a skip from block 1 to block 3,
  each randomly initialised and trained one epoch on data that ships: export -> inspect -> profile
  -> plan -> emit -> verify (max abs diff <= 1e-5 through the chained parts) -> run (exit rates
  equal the plan's; bytes per link equal the live set's bytes per forwarded sample).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from finplan.cli.main import main  # noqa: E402
from finplan.data import ModelData, load_data, save_dataset  # noqa: E402
from finplan import textdata  # noqa: E402
from finplan.exits import attach_exits, export_onnx, thirdparty, train  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Your own model"
BUDGET_S = "0.2"  # the profiler's time budget in the tests (the README leaves the default)
VERIFY_ATOL = 1e-5
NETWORK = """schema: finplan.network/1
nodes:
  - {name: device, tier: mobile, compute: {ops_per_s: 2.0e+9, power_w: 6}}
  - {name: edge, tier: edge, compute: {ops_per_s: 1.0e+11, power_w: 30}}
  - {name: cloud, tier: cloud, compute: {ops_per_s: 3.0e+11, power_w: 60}}
links:
  - {from: device, to: edge, bandwidth_bps: 1.0e+8, latency_s: 0.0005, energy_j_per_bit: 1.0e-8}
  - {from: device, to: cloud, bandwidth_bps: 1.0e+7, latency_s: 0.005, energy_j_per_bit: 2.0e-8}
  - {from: edge, to: cloud, bandwidth_bps: 1.0e+8, latency_s: 0.001, energy_j_per_bit: 1.0e-8}
"""
IMAGE_SHAPE = (3, 16, 16)
IMAGE_TRAIN = 384  # one epoch of 12 batches of 32: enough for the exits to differ, small enough for 2 cores
CALIB_LIMIT = 100


# --------------------------------------------------------------------------- the README's examples

def readme_examples() -> dict[str, list[tuple[str, str]]]:
    """{example title: [(language, code), ...]} from the README section, in order."""
    text = README.read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    examples: dict[str, list[tuple[str, str]]] = {}
    for part in re.split(r"\n### ", section)[1:]:
        title = part.splitlines()[0].strip()
        examples[title] = re.findall(r"```(python|sh)\n(.*?)```", part, flags=re.S)
    return examples


def run_shell_block(code: str) -> None:
    for command in code.replace("\\\n", " ").splitlines():
        if not command.strip():
            continue
        argv = shlex.split(command)
        assert argv[0] == "finplan", command
        if argv[1] == "profile":
            argv += ["--budget-s", BUDGET_S, "--quiet"]
        assert main(argv[1:]) == 0, command


@pytest.fixture(scope="session")
def readme_folder(tmp_path_factory):
    """One folder in which every README example ran, in order (the chain tests reuse its files)."""
    folder = tmp_path_factory.mktemp("readme")
    previous = os.getcwd()
    os.chdir(folder)
    try:
        for title, blocks in readme_examples().items():
            for index, (language, code) in enumerate(blocks):
                if language == "python":
                    exec(compile(code, f"README {title} block {index + 1}", "exec"), {"__name__": "readme"})
                else:
                    run_shell_block(code)
    finally:
        os.chdir(previous)
    return folder


def test_the_readme_has_the_three_examples():
    titles = list(readme_examples())
    assert titles[:3] == ["1. A torchvision CNN through `attach_exits`",
                          "2. A plain ONNX export through `finplan cuts` + `finplan annotate`",
                          "3. A Hugging Face BERT with its attention mask"]
    assert all(any(lang == "sh" for lang, _ in readme_examples()[t]) for t in titles[:3])


def test_the_readme_examples_run(readme_folder):
    for stem in ("resnet18", "two_exits", "bert"):
        card = json.loads((readme_folder / f"{stem}.card.json").read_text())
        assert card["calibration"]["samples"] == (300 if stem == "bert" else CALIB_LIMIT)
    bert = json.loads((readme_folder / "bert.card.json").read_text())
    assert [e["name"] for e in bert["exits"]] == ["exit1", "exit2", "exit3", "exit4"]
    # the mask crosses every cut beside the hidden state
    assert all(len(block.get("live_set", [])) == 2 for block in bert["blocks"][:-1])
    import onnx

    annotated = onnx.load(str(readme_folder / "two_exits.branchy.onnx"))
    from finplan.contract import model_hash, read_contract

    assert model_hash(annotated) == model_hash(onnx.load(str(readme_folder / "two_exits.onnx")))
    assert [e.name for e in read_contract(annotated).exits] == ["early", "final"]


# --------------------------------------------------------------------------- each architecture, the whole chain

def _image_data():
    train_data = load_data("digits", IMAGE_SHAPE, split="train", seed=0, limit=IMAGE_TRAIN)
    calibration = load_data("digits", IMAGE_SHAPE, split="calibration", seed=0, limit=CALIB_LIMIT)
    return train_data, calibration


def _export_image(model, after, folder: Path, name: str, lr: float = 1e-3, **options):
    train_data, calibration = _image_data()
    branchy = attach_exits(model, after=after, example_input=torch.from_numpy(calibration.x[:2]), **options)
    train(branchy, train_data, epochs=1, seed=0, batch_size=32, lr=lr)
    export_onnx(branchy, folder / f"{name}.onnx", check_inputs=calibration.x)
    save_dataset(calibration, folder / f"{name}.calib.npz")
    return folder / f"{name}.onnx", folder / f"{name}.calib.npz"


class SkipNet(torch.nn.Module):
    """U-Net style: enc1 -> enc2 -> dec, where dec also reads enc1's output (a skip from block 1 to block 3)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        first = self.enc1(x)
        second = self.mid(self.enc2(first))
        return self.classifier(self.dec(torch.cat([self.up(second), first], dim=1)))


def build_resnet18(folder):
    torch.manual_seed(0)
    model = thirdparty.torchvision().models.resnet18(num_classes=10)
    return _export_image(model, ["layer1", "layer2", "layer3"], folder, "resnet18")


def build_mobilenet_v2(folder):
    torch.manual_seed(0)
    model = thirdparty.torchvision().models.mobilenet_v2(num_classes=10, width_mult=0.25)
    return _export_image(model, ["features.3", "features.7"], folder, "mobilenet_v2", lr=1e-2)


def build_vit(folder):
    torch.manual_seed(0)
    vit = thirdparty.torchvision().models.vision_transformer.VisionTransformer(
        image_size=16, patch_size=4, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)
    return _export_image(vit, ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"], folder, "vit")


def build_hf_bert(folder):
    transformers = thirdparty.transformers()
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=textdata.VOCAB_SIZE, hidden_size=16, num_hidden_layers=3,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=textdata.SEQ_LEN, num_labels=textdata.NUM_CLASSES)
    model = transformers.BertForSequenceClassification(config)
    train_arrays, calib_arrays = textdata.split(textdata.keywords(500, seed=0), 0.2, seed=0)

    def named(part):
        return ModelData({n: part[n] for n in textdata.INPUT_NAMES}, part["y"], "keywords")

    calibration = named(calib_arrays)
    branchy = attach_exits(model, after=["bert.encoder.layer.0", "bert.encoder.layer.1"],
                           example_input={n: torch.from_numpy(a[:2]) for n, a in calibration.inputs.items()})
    train(branchy, named(train_arrays), epochs=1, seed=0, batch_size=32)
    export_onnx(branchy, folder / "hf_bert.onnx", check_inputs=calibration.inputs)
    textdata.save(calib_arrays, folder / "hf_bert.calib.npz")
    return folder / "hf_bert.onnx", folder / "hf_bert.calib.npz"


def build_skip(folder):
    torch.manual_seed(0)
    return _export_image(SkipNet(), ["enc1", "mid"], folder, "skip", lr=1e-2)


def labels_from_the_last_exit(model: Path, calib: Path) -> Path:
    """The calibration file with y = the model's own final-exit prediction.

    A model trained one epoch is barely better than chance at every exit, so an energy-minimal
    plan would stop at block 1 and leave most of the chain untested. With these labels the last
    exit is right on every sample, and an accuracy target near 1 makes the plan reach the last
    block while confident samples still leave early: every cut, live set and exit is exercised.
    """
    import onnx
    import onnxruntime as ort

    from finplan.contract import read_contract

    with np.load(calib) as archive:
        arrays = {key: archive[key] for key in archive.files}
    proto = onnx.load(str(model))
    contract = read_contract(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {name: arrays["x" if "x" in arrays and len(contract.inputs) == 1 else name] for name in contract.inputs}
    (final,) = session.run([contract.exits[-1].output], feeds)
    arrays["y"] = final.argmax(axis=1).astype(np.int64)
    relabelled = calib.with_name(calib.stem + ".relabelled.npz")
    np.savez(relabelled, **arrays)
    return relabelled


TARGET_ACCURACY = "0.95"
BUILDERS = {"resnet18": build_resnet18, "mobilenet_v2": build_mobilenet_v2, "vit": build_vit,
            "hf_bert": build_hf_bert, "skip": build_skip}


@pytest.fixture(scope="session", params=list(BUILDERS))
def chained(request, tmp_path_factory):
    """export -> profile (card) -> plan -> emit for one architecture; returns what the checks need."""
    name = request.param
    work = tmp_path_factory.mktemp(name)
    model, calib = BUILDERS[name](work)
    calib = labels_from_the_last_exit(model, calib)
    assert main(["inspect", str(model), "--json"]) == 0
    assert main(["profile", str(model), "--calib", str(calib), "--limit", str(CALIB_LIMIT), "--budget-s", BUDGET_S,
                 "--energy", "power-model", "--power-w", "5", "--quiet", "-o", str(work / "p.profile.json"),
                 "--card", str(work / "card.json")]) == 0
    card = json.loads((work / "card.json").read_text())
    assert card["exits"][-1]["accuracy"] == 1.0
    (work / "network.yaml").write_text(NETWORK)
    assert main(["plan", "--model", str(work / "card.json"), "--network", str(work / "network.yaml"),
                 "--source", "device", "--max-latency", "10s", "--min-accuracy", TARGET_ACCURACY, "--non-strict",
                 "--mode", "dynamic", "-q", "-o", str(work / "plan.json")]) == 0
    assert main(["emit", str(work / "plan.json"), "--model", str(model), "-o", str(work / "deploy"), "-q"]) == 0
    return name, work, model, calib, card


def test_verify_through_the_chained_parts(chained, capsys):
    name, work, model, calib, _ = chained
    capsys.readouterr()
    code = main(["verify", str(work / "deploy"), "--model", str(model), "--data", str(calib), "--limit",
                 str(CALIB_LIMIT), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"], report
    assert report["max_diff"] <= VERIFY_ATOL and report["decision_mismatches"] == 0


def test_run_exit_rates_equal_the_plan(chained, capsys):
    name, work, model, calib, _ = chained
    app = json.loads((work / "plan.json").read_text())["applications"][0]
    assert app["feasible"]
    capsys.readouterr()
    assert main(["run", str(work / "deploy"), "--data", str(calib), "--limit", str(CALIB_LIMIT), "--batch-size", "16",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for exit_name, rate in app["predicted"]["exit_rates"].items():
        assert report["exit_rates"].get(exit_name, 0.0) == pytest.approx(rate, abs=1e-9), exit_name
    assert report["accuracy"] == pytest.approx(app["predicted"]["accuracy"], abs=1e-9)
    rows = {row["metric"]: row for row in report["comparison"]}
    for transfer in app["transfers"]:
        link = f"{transfer['from']}->{transfer['to']}"
        samples = report["links"][link]["samples"]
        assert rows[f"bytes[{link}]"]["measured"] == pytest.approx(samples * transfer["bytes"] / CALIB_LIMIT, rel=1e-9)


@pytest.mark.parametrize("chained", ["skip"], indirect=True)
def test_the_skip_crosses_two_cuts(chained):
    name, work, model, calib, card = chained
    live = [[t["bytes"] for t in block.get("live_set", [])] for block in card["blocks"]]
    # after block 1: enc1's output (8x16x16 float32); after block 2: mid's output (8x8x8) and still enc1's
    assert live[0] == [8 * 16 * 16 * 4]
    assert sorted(live[1]) == sorted([8 * 16 * 16 * 4, 8 * 8 * 8 * 4])
    assert card["blocks"][1]["output_bytes"] == sum(live[1])
