"""Benchmark: classifier + Grad-CAM stages, the former path against the current one, in the same process.

Former: mirror-TTA probabilities under inference_mode (batch 16), then ``monai.visualize.GradCAM`` (a third
forward and a backward through the whole network, batch 16). Current: one forward per slice with hooks
stopping the backward at the target layer (logits and CAM together) plus the mirror pass, CPU batch 4.
Both maps go into the CT grid by the current ``to_volume``. Prints each stage, the ratio, the largest
probability difference, the time from a cancel request to the stop, and the load. Inputs: the sample CT
and the COVID-CT-MD COVID-19 volume P002. Run: python Testing/benchmarks/bench_gradcam.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
from _data import DATA, REPO

SAMPLE = REPO / "Resources" / "SampleData" / "Lung_Dx-A0002_chestCT.nrrd"
VOLUMES = {"sample CT (A0002)": SAMPLE, "COVID-CT-MD P002": DATA / "covid-ct-md" / "COVID-19 subjects" / "P002"}


def former(package, net, images, device, GradCAM):
    """The code this replaces: probabilities (2 passes), then MONAI Grad-CAM (3rd pass + full backward)."""
    import torch

    from CovidCTScreenLib.models.inference import calibrated_probabilities
    from CovidCTScreenLib.models.networks import gradcam_layer

    prob = calibrated_probabilities(package, net, images, device, batch_size=16)
    cam, maps = GradCAM(nn_module=net, target_layers=gradcam_layer(package.card["architecture"])), []
    for start in range(0, len(images), 16):
        x = torch.from_numpy(images[start:start + 16])[:, None].to(device)
        maps.append(cam(x, class_idx=package.positive_index).detach().float().cpu().numpy()[:, 0])
    return prob, np.concatenate(maps)


def cancel_latency(package, net, images, device, after_s: float = 1.0) -> float:
    """Seconds from a cancel request (``after_s`` into the current path) to the stop."""
    from CovidCTScreenLib.errors import Cancelled
    from CovidCTScreenLib.models.inference import probabilities_and_gradcam

    requested = []
    timer = threading.Timer(after_s, lambda: requested.append(time.perf_counter()))
    timer.start()
    try:
        probabilities_and_gradcam(package, net, images, device, cancel=lambda: bool(requested))
    except Cancelled:
        return time.perf_counter() - requested[0]
    finally:
        timer.cancel()
    return float("nan")  # finished before the request


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import torch

    from CovidCTScreenLib.models.explain import to_volume
    from CovidCTScreenLib.models.inference import lung_slices, probabilities_and_gradcam, select_device
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.models.model_package import load_package
    from CovidCTScreenLib.input.volume_io import load_ct

    t = time.perf_counter()
    from monai.visualize import GradCAM
    import_s = time.perf_counter() - t
    device = select_device(args.device)
    package = load_package()
    net, old_net = package.build(device), package.build(device)  # MONAI's hooks stay on old_net
    print(f"device {device}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
          f"load at start {os.getloadavg()[0]:.1f}; former path also imports monai.visualize: {import_s:.1f} s once")
    for name, path in VOLUMES.items():
        volume = load_ct(path)
        lungs = lung_mask(volume.hu, volume.spacing).lungs
        slices = lung_slices(volume.hu, lungs, volume.spacing)
        old_s, new_s, b16_s = [], [], []
        for _ in range(args.repeats):  # alternate, so both see the same load
            t = time.perf_counter()
            p_old, maps = former(package, old_net, slices.images, device, GradCAM)
            t1 = time.perf_counter()
            weights = p_old[:, package.positive_index]
            to_volume(maps, weights, slices.indices, slices.box, volume.shape, lungs)
            old_s.append((t1 - t, time.perf_counter() - t1))
            t = time.perf_counter()
            p_new, cams = probabilities_and_gradcam(package, net, slices.images, device)
            t1 = time.perf_counter()
            to_volume(cams, p_new[:, package.positive_index], slices.indices, slices.box, volume.shape, lungs)
            new_s.append((t1 - t, time.perf_counter() - t1))
            t = time.perf_counter()
            probabilities_and_gradcam(package, net, slices.images, device, batch_size=16)
            b16_s.append(time.perf_counter() - t)
        old, new = np.median(old_s, axis=0), np.median(new_s, axis=0)
        print(f"{name}: {len(slices.indices)} lung slices of {volume.shape[0]}, load {os.getloadavg()[0]:.1f}")
        for label, (net_s, heat_s) in (("former: ", old), ("current:", new)):
            print(f"  {label} classifier + Grad-CAM {net_s:6.2f} s, heatmap volume {heat_s:5.2f} s, "
                  f"total {net_s + heat_s:6.2f} s")
        print(f"  current / former: {new.sum() / old.sum():.2f}x; current at batch 16: classifier + Grad-CAM "
              f"{np.median(b16_s):6.2f} s (the batch size's share of the gain)")
        print(f"  max |P(current) - P(former)| = {np.abs(p_new - p_old).max():.1e}; "
              f"cancel requested 1 s in, stopped after {cancel_latency(package, net, slices.images, device):.2f} s")


if __name__ == "__main__":
    main()
