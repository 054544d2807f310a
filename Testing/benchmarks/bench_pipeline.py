"""Benchmark: the whole screening job on the shipped sample CT (CPU), against unbatched inference.

Each variant runs in a fresh process so its peak memory is its own. Run:
python Testing/benchmarks/bench_pipeline.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "Lung_Dx-A0002_chestCT.nrrd"


def _run(device: str, batch_size: int | None, queue) -> None:
    from CovidCTScreenLib.screening.pipeline import screen_to_folder

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = screen_to_folder(SAMPLE, Path(tmp) / "report", device=device, batch_size=batch_size)
        total = time.perf_counter() - t
    queue.put((total, result.timings, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               result.verdict.label))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"whole job on {SAMPLE.name} (512x512x30), device {args.device}, {mp.cpu_count()} CPU cores")
    for name, bs in (("batched (default)", None), ("baseline: batch size 1", 1)):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(args.device, bs, q))
        p.start()
        total, timings, peak_mb, label = q.get()
        p.join()
        stages = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in timings.items())
        print(f"  {name:<24} total {total:5.1f} s  ({stages})  peak RSS {peak_mb:5.0f} MB  -> {label}")
    print("  target: total < 60 s, peak < 4 GB")


if __name__ == "__main__":
    main()
