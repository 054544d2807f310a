"""Benchmark: covidct-evaluate of the shipped model on the COVID-CT val split (118 images, 2000 patient
resamples), against the same evaluation scoring one image at a time. Target: < 60 s on the 2-core CPU.

Each variant runs in a fresh process. Run:
python Testing/benchmarks/bench_evaluate.py [--data ../shared/data] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from _data import DATA


def _run(data: Path, device: str, batch_size: int | None, queue) -> None:
    from CovidCTScreenLib.evaluation.evaluate import evaluate_to_folder
    from CovidCTTrainingLib.data import write_covid_ct_split_csv

    stages: dict[str, float] = {}
    last = {"stage": None, "t": time.perf_counter()}

    def progress(stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if last["stage"]:
            stages[last["stage"]] = stages.get(last["stage"], 0.0) + now - last["t"]
        last.update(stage=stage, t=now)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        lst = Path(tmp) / "val.csv"
        write_covid_ct_split_csv(data / "covid-ct", "val", lst)
        result = evaluate_to_folder(lst, Path(tmp) / "out", device=device, batch_size=batch_size, progress=progress)
        total = time.perf_counter() - t
    queue.put((total, stages, result.document["results"]["operating_point"]["auc"]["value"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"covidct-evaluate, shipped model, COVID-CT val (118 images), device {args.device}, "
          f"{mp.cpu_count()} CPU cores")
    for name, bs in (("batched (default)", None), ("baseline: batch size 1", 1)):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(args.data, args.device, bs, q))
        p.start()
        total, stages, auc = q.get()
        p.join()
        parts = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"  {name:<24} total {total:5.1f} s  ({parts})  AUC {auc:.3f}")
    print("  target: total < 60 s")


if __name__ == "__main__":
    main()
