"""Profile the embedded B-AlexNet twice, a few minutes apart, and report how well they agree.

Reports (markdown): total profiling time of each run with default settings (all blocks and
exits, 1,000 calibration samples), the median over blocks of |p50 difference| / p50, and the
sum of block latencies against the whole model's. Usage:

    .venv/bin/python benchmarks/profile_repeatability.py [--gap-s 120] [--out report.json]

The 1,000 calibration samples are the embedded calibration split (359) topped up with digits
training samples: a timing target, not an accuracy measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from finplan.data import embedded_model_path, load_data  # noqa: E402
from finplan.profiler import profile_model  # noqa: E402
from finplan.profiler.device import cpu_model  # noqa: E402


def thousand_samples(folder: Path) -> Path:
    calib = load_data("embedded", (1, 32, 32))
    extra = load_data("digits", (1, 32, 32), split="train", limit=1000 - len(calib))
    path = folder / "calib-1000.npz"
    np.savez(path, x=np.concatenate([calib.x, extra.x]), y=np.concatenate([calib.y, extra.y]))
    return path


def one_run(model: Path, calib: Path, energy: str) -> tuple[dict, float]:
    started = time.perf_counter()
    result = profile_model(model, calib=str(calib), limit=1000, energy=energy, need_card=True)
    return result.profile, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gap-s", type=float, default=120.0, help="pause between the two runs")
    parser.add_argument("--energy", default="auto", help="energy backend (default auto, as the CLI)")
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args()
    model = embedded_model_path()
    with tempfile.TemporaryDirectory() as folder:
        calib = thousand_samples(Path(folder))
        first, first_s = one_run(model, calib, args.energy)
        time.sleep(args.gap_s)
        second, second_s = one_run(model, calib, args.energy)
    rel = [abs(a["latency_s"]["p50"] - b["latency_s"]["p50"]) / a["latency_s"]["p50"]
           for a, b in zip(first["blocks"], second["blocks"])]
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "threads": first["session_options"]["intra_op_threads"],
        "energy": f"{first['energy']['method']} ({'measured' if first['energy']['measured'] else 'ESTIMATED'})",
        "gap_s": args.gap_s,
        "profiling_time_s": [round(first_s, 2), round(second_s, 2)],
        "median_rel_p50_diff_blocks": statistics.median(rel),
        "max_rel_p50_diff_blocks": max(rel),
        "sum_blocks_over_whole": [p["whole_model"]["sum_of_blocks_p50_s"] / p["whole_model"]["latency_s"]["p50"]
                                  for p in (first, second)],
        "sum_parts_over_whole": [p["whole_model"]["parts_over_whole"] for p in (first, second)],
        "sum_parts_over_whole_overhead_corrected": [p["whole_model"]["parts_over_whole_overhead_corrected"]
                                                    for p in (first, second)],
        "block_p50_s": [[b["latency_s"]["p50"] for b in p["blocks"]] for p in (first, second)],
    }
    print(f"Machine: {report['machine']}; onnxruntime intra-op threads {report['threads']}; energy {report['energy']}; "
          f"gap {args.gap_s:g} s\n")
    print("| metric | run 1 | run 2 | target |")
    print("|---|---|---|---|")
    print(f"| profiling time (1,000 calib samples, defaults) | {first_s:.1f} s | {second_s:.1f} s | < 60 s |")
    for (index, block), a, b in zip(enumerate(first["blocks"]), report["block_p50_s"][0], report["block_p50_s"][1]):
        print(f"| {block['name']} p50 | {a * 1e6:.1f} µs | {b * 1e6:.1f} µs | |")
    print(f"| median over blocks of abs(p50 diff)/p50 | {report['median_rel_p50_diff_blocks'] * 100:.2f}% | | <= 5% |")
    print(f"| sum of block p50 / whole model p50 | {report['sum_blocks_over_whole'][0]:.3f} | "
          f"{report['sum_blocks_over_whole'][1]:.3f} | within 10% |")
    print(f"| sum of block+exit p50 / whole | {report['sum_parts_over_whole'][0]:.3f} | "
          f"{report['sum_parts_over_whole'][1]:.3f} | |")
    print(f"| same, less the extra per-call overheads | {report['sum_parts_over_whole_overhead_corrected'][0]:.3f} | "
          f"{report['sum_parts_over_whole_overhead_corrected'][1]:.3f} | |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
