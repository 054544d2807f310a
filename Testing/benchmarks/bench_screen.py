"""Benchmark: the whole screening job on the covid-ct-md HU volumes, stage by stage, with the floor.

For each CT (normal002 167 slices, P002, cap002 from ``../shared/data/covid-ct-md``; or a synthetic thin-slice
CT: normal002 resampled in z to ``--slices N``) a fresh process runs ``pipeline.screen_to_folder`` and prints
each stage's time, the peak RSS reached by the end of each stage, the machine load before and after, and the
**floor** measured in the same process: read + one classifier pass (no mirror) + one lesion-UNet pass over the
lung slices. Figures on a shared machine are contended: compare ratios within one run; the CPU time of each stage
(``time.process_time``, all threads of the job's process) moves much less with the load than wall time.

    python Testing/benchmarks/bench_screen.py [--cases normal002 P002 cap002] [--slices 1000]
        [--device cpu|cuda] [--batch-size N] [--fp16] [--threads N] [--repeat 3] [--tracemalloc] [--onnx]

``--src A B`` runs each case once per source tree (folders holding ``CovidCTScreenLib``, e.g. an older checkout
made by ``git archive``), interleaved, and prints each stage's ratio to the first: same machine, same minutes.
``--fp16`` runs the whole job under CUDA fp16 autocast (``--device cuda`` only). ``--onnx`` adds the
classifier pass through ONNX Runtime (if installed) to the floor, as a variant with its ratio and largest
logit difference. ``--tracemalloc`` adds the peak of numpy/Python allocations per stage (slows Python loops).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _data import DATA, REPO

CTMD = DATA / "covid-ct-md"
CASES = {"normal002": CTMD / "Normal subjects" / "normal002", "P002": CTMD / "COVID-19 subjects" / "P002",
         "cap002": CTMD / "Cap subjects" / "cap002"}
RUNS = REPO / "runs" / "bench"
STAGE_KEYS = ["load_s", "lung_mask_s", "inference_s", "gradcam_s", "lesions_s", "lesions_hu_bands_s",
              "lesions_unet_s", "lesions_streaks_s", "lesions_summary_s", "report_s"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def thin_slice_ct(slices: int) -> Path:
    """normal002 resampled linearly in z to ``slices`` slices (int16 HU, uncompressed NRRD, cached in runs/)."""
    import numpy as np
    import SimpleITK as sitk

    from CovidCTScreenLib.input.volume_io import load_ct

    path = RUNS / f"normal002_z{slices}.nrrd"
    if path.exists():
        return path
    ct = load_ct(CASES["normal002"])
    img = ct.like(ct.hu.astype(np.float32))
    size = [img.GetSize()[0], img.GetSize()[1], slices]
    spacing = (img.GetSpacing()[0], img.GetSpacing()[1], img.GetSpacing()[2] * (img.GetSize()[2] - 1) / (slices - 1))
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing, img.GetDirection(),
                        -1024.0, sitk.sitkFloat32)
    out = sitk.Cast(sitk.Round(out), sitk.sitkInt16)
    RUNS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.nrrd")
    sitk.WriteImage(out, str(tmp), useCompression=False)
    tmp.rename(path)
    return path


def _floor(result, args, images) -> dict:
    """Read + one classifier pass + one lesion-UNet pass over the lung slices, timed in this process."""
    import numpy as np
    import torch

    from CovidCTScreenLib.models.inference import select_device
    from CovidCTScreenLib.lesions.lesion_seg import load_lesion_model, predict_probabilities
    from CovidCTScreenLib.input.preprocess import prepare_hu_slice, lung_box
    from CovidCTScreenLib.input.volume_io import load_ct

    dev = select_device(args.device)
    bs = args.batch_size or (64 if dev.type == "cuda" else 16)
    out = {}
    t, c = time.perf_counter(), time.process_time()
    load_ct(result.volume.source if result.volume.source else args.source)
    out["read_s"], out["read_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    net = result.model.build(dev)
    autocast = dict(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda")

    def classify():
        logits = []
        with torch.inference_mode(), torch.autocast(**autocast):
            for i in range(0, len(images), bs):
                logits.append(net(torch.from_numpy(images[i:i + bs])[:, None].to(dev)).float().cpu())
        return torch.cat(logits).numpy()

    classify()  # warm-up (first-call allocations, cuDNN autotune)
    _sync(dev)
    t, c = time.perf_counter(), time.process_time()
    logits = classify()
    _sync(dev)
    out["classifier_s"], out["classifier_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    lesion = load_lesion_model(None, str(dev))
    hu, lungs = result.volume.hu, result.mask.labels > 0
    ks = [k for k in range(hu.shape[0]) if lungs[k].any()]
    x = np.stack([prepare_hu_slice(hu[k], lung_box(lungs[k]), lesion.size, lesion.window) for k in ks])
    with torch.autocast(**autocast):
        predict_probabilities(lesion, x[:bs], bs)
        _sync(dev)
        t, c = time.perf_counter(), time.process_time()
        predict_probabilities(lesion, x, bs)
        _sync(dev)
    out["lesion_unet_s"], out["lesion_unet_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    out["floor_s"] = out["read_s"] + out["classifier_s"] + out["lesion_unet_s"]
    out["floor_cpu_s"] = out["read_cpu_s"] + out["classifier_cpu_s"] + out["lesion_unet_cpu_s"]
    out["lesion_slices"] = len(ks)
    if args.onnx:
        out.update(_onnx_variant(net, images, logits, bs, out["classifier_s"]))
    return out


def _onnx_variant(net, images, logits, bs, torch_s) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnx": "onnxruntime not installed"}
    import numpy as np
    import torch

    path = Path(tempfile.mkdtemp()) / "classifier.onnx"
    cpu_net = net.float().cpu().eval()
    x0 = torch.from_numpy(images[:bs])[:, None]
    try:
        torch.onnx.export(cpu_net, x0, str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)
    except Exception as e:  # noqa: BLE001 - a variant that cannot be exported is reported, not fatal
        return {"onnx": f"export failed: {type(e).__name__}: {str(e)[:200]}"}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run():
        return np.concatenate([sess.run(None, {"x": images[i:i + bs][:, None]})[0] for i in range(0, len(images), bs)])

    run()
    t = time.perf_counter()
    ort_logits = run()
    ort_s = time.perf_counter() - t
    return {"onnx_classifier_s": ort_s, "onnx_ratio": ort_s / torch_s,
            "onnx_max_logit_diff": float(np.abs(ort_logits - logits).max())}


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _child(source: str, src: str, args, queue) -> None:
    import contextlib

    sys.path.insert(0, src)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    from CovidCTScreenLib.screening import pipeline

    stage_peaks, traced, marks = {}, {}, [("start", 0.0, time.process_time())]

    def progress(stage: str, fraction: float) -> None:
        marks.append((stage, fraction, time.process_time()))
        if fraction >= pipeline.STAGES[stage] - 1e-9:
            stage_peaks[stage] = _peak_mb()
            if args.tracemalloc:
                import tracemalloc

                traced[stage] = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.reset_peak()

    fp16 = torch.autocast("cuda", dtype=torch.float16) if args.fp16 else contextlib.nullcontext()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, fp16:
        t = time.perf_counter()
        result = pipeline.screen_to_folder(source, Path(tmp) / "report", progress=progress, device=args.device,
                                           batch_size=args.batch_size)
        total = time.perf_counter() - t
        report_s = result.timings.get("report_s")
        if report_s is None and "report" in stage_peaks:  # older trees: the rest of the job is the report
            report_s = total - sum(v for k, v in result.timings.items() if k in
                                   ("load_s", "lung_mask_s", "inference_s", "gradcam_s", "lesions_s"))
    images = None
    if args.floor:
        from CovidCTScreenLib.models.inference import lung_slices

        spec = result.model.card["input"]
        images = lung_slices(result.volume.hu, result.mask.labels > 0, result.volume.spacing,
                             spec["spatial_shape"][0], tuple(spec["hu_window"])).images
    peak = _peak_mb()
    args.source = source
    floor = _floor(result, args, images) if args.floor else {}
    timings = dict(result.timings)
    if report_s is not None:
        timings["report_s"] = report_s
    cpu = _cpu_by_stage(marks, pipeline.STAGES)
    queue.put({"total_s": total, "timings": timings, "peak_mb": peak, "stage_peaks": stage_peaks,
               "traced_mb": traced, "cpu_s": cpu, "verdict": result.verdict.label,
               "lung_slices": len(result.slice_indices),
               "shape": result.volume.shape, "hu_dtype": str(result.volume.hu.dtype), "floor": floor,
               "load": (load0, os.getloadavg()[0]), "threads": torch.get_num_threads()})


def _cpu_by_stage(marks: list[tuple[str, float, float]], stages: dict) -> dict:
    """CPU seconds per stage from the (stage, fraction, process_time) of every progress call: a stage runs
    from the last call of the one before to its own last call. The lesion steps report 0.2 (HU bands),
    0.7 (UNet) and 1.0 (streaks) of their stage."""
    last, order = {}, ["start", *stages]
    for stage, _, cpu in marks:
        last[stage] = cpu
    done = [s for s in order if s in last]
    out = {b: last[b] - last[a] for a, b in zip(done, done[1:])}
    out["total"] = last[done[-1]] - last["start"]
    if "lesions" in last and "grad-cam" in last:
        start, end = stages["grad-cam"], stages["lesions"]
        t, steps = last["grad-cam"], {}
        for name, f in (("lesions hu bands", 0.2), ("lesions unet", 0.7), ("lesions streaks", 1.0)):
            at = next((c for s, x, c in marks if s == "lesions" and x >= start + (end - start) * f - 1e-9), None)
            if at is not None:
                steps[name], t = at - t, at
        steps["lesions summary"] = last["lesions"] - t
        out.update(steps)
    return out


def run_case(source: Path, src: str, args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(source), src, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def _fmt(runs: list[dict], key: str) -> str:
    vals = [r["timings"].get(key) for r in runs if r["timings"].get(key) is not None]
    return f"{statistics.median(vals):6.2f}" if vals else "     -"


def _print_case(name: str, src: str, runs: list[dict], base: list[dict] | None) -> None:
    def ratio(key):
        if base is None:
            return ""
        a = [x["timings"].get(key) for x in runs if x["timings"].get(key) is not None]
        b = [x["timings"].get(key) for x in base if x["timings"].get(key) is not None]
        return f"  {statistics.median(a) / statistics.median(b):5.2f}x first" if a and b and min(b) > 0 else ""

    r = runs[0]
    total = statistics.median(x["total_s"] for x in runs)
    loads = ", ".join(f"{x['load'][0]:.2f}" for x in runs)
    totals = ", ".join(f"{x['total_s']:.1f}" for x in runs)
    print(f"\n{name} [{src}]: {r['shape'][0]} slices ({r['lung_slices']} lung slices), HU {r['hu_dtype']}, "
          f"torch threads {r['threads']}, verdict {r['verdict']}, load {loads}")
    for x in runs:
        x["timings"]["total_s"] = x["total_s"]
    peak = max(x["peak_mb"] for x in runs)
    print(f"  total {total:6.2f} s (median of {len(runs)}: {totals})"
          f"{ratio('total_s')}, peak RSS {peak:6.0f} MB"
          + (f"  {peak / max(x['peak_mb'] for x in base):5.2f}x first" if base else ""))
    def cpu(stage):
        a = [x["cpu_s"][stage] for x in runs if stage in x["cpu_s"]]
        b = [x["cpu_s"][stage] for x in base or [] if stage in x["cpu_s"]]
        if not a:
            return ""
        return (f"  CPU {statistics.median(a):6.2f} s"
                + (f" {statistics.median(a) / statistics.median(b):5.2f}x first" if b and min(b) > 0 else ""))

    print(f"  CPU time of the job {cpu('total').strip()[4:].strip()}")
    for key in STAGE_KEYS:
        stage = key[:-2].replace("_", " ").replace("gradcam", "grad-cam")
        if any(key in x["timings"] or stage in x["cpu_s"] for x in runs):
            peaks, traced = r["stage_peaks"].get(stage), r["traced_mb"].get(stage)
            print(f"  {key[:-2]:<18} {_fmt(runs, key)} s{ratio(key)}{cpu(stage)}"
                  + (f"  peak RSS by its end {peaks:6.0f} MB" if peaks else "")
                  + (f"  traced peak {traced:6.0f} MB" if traced else ""))
    if r["floor"]:
        f = {k: statistics.median(x["floor"][k] for x in runs) for k in r["floor"] if isinstance(r["floor"][k], float)}
        print(f"  floor {f['floor_s']:6.2f} s = read {f['read_s']:.2f} + classifier {f['classifier_s']:.2f} "
              f"({r['lung_slices']} slices, one pass) + lesion UNet {f['lesion_unet_s']:.2f} "
              f"({r['floor']['lesion_slices']} slices); job / floor {total / f['floor_s']:.1f}x; in CPU time "
              f"floor {f['floor_cpu_s']:.2f} s, job / floor "
              f"{statistics.median(x['cpu_s']['total'] for x in runs) / f['floor_cpu_s']:.1f}x")
        if "onnx_classifier_s" in f:
            print(f"  variant ONNX Runtime classifier {f['onnx_classifier_s']:.2f} s = "
                  f"{f['onnx_ratio']:.2f}x the torch pass, max logit difference {f['onnx_max_logit_diff']:.1e}")
        elif "onnx" in r["floor"]:
            print(f"  variant ONNX Runtime: {r['floor']['onnx']}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=["normal002"], choices=list(CASES))
    ap.add_argument("--slices", type=int, default=None, help="synthetic thin-slice CT: normal002 resampled to N slices")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--fp16", action="store_true", help="whole job under CUDA fp16 autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case (medians are printed)")
    ap.add_argument("--no-floor", dest="floor", action="store_false")
    ap.add_argument("--onnx", action="store_true", help="add an ONNX Runtime classifier pass to the floor")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--src", nargs="*", default=None, help="source trees to compare (default: this checkout)")
    args = ap.parse_args(argv)
    if args.fp16 and args.device != "cuda":
        ap.error("--fp16 needs --device cuda (CPU runs fp32)")
    sources = {c: CASES[c] for c in args.cases}
    if args.slices:
        sources = {f"normal002 z{args.slices}": thin_slice_ct(args.slices)}
    print(f"bench_screen: device {args.device}, batch size {args.batch_size or 'default'}, fp16 {args.fp16}, "
          f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} (1 / 5 min)")
    srcs = [str(Path(x).resolve()) for x in (args.src or [REPO / "CovidCTScreen"])]
    for name, source in sources.items():
        by_src = {src: [] for src in srcs}
        for _ in range(args.repeat):
            for src in srcs:
                by_src[src].append(run_case(source, src, args))
        base = by_src[srcs[0]]
        for src, runs in by_src.items():
            _print_case(name, src, runs, None if src == srcs[0] else base)
    print(f"\nload after: {os.getloadavg()[0]:.2f}. Absolute times on a shared machine are provisional.")


if __name__ == "__main__":
    sys.exit(main())
