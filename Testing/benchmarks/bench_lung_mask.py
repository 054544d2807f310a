"""Benchmark: 3D lung masking of a 512 x 512 x 141 real chest CT, against the same algorithm at full resolution.

The 141-slice volume is the real NIfTI chest CT (512 x 512 x 64, 5 mm) resampled linearly to 141 slices
(the data README names no native 141-slice volume). Run: python Testing/benchmarks/bench_lung_mask.py
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

from _data import DATA


def _volume():
    import SimpleITK as sitk

    img = sitk.ReadImage(str(DATA / "chest-ct" / "Lung_Dx-A0001_5mm_B.nii.gz"))
    size = [512, 512, 141]
    spacing = (img.GetSpacing()[0], img.GetSpacing()[1], img.GetSpacing()[2] * img.GetSize()[2] / size[2])
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing, img.GetDirection(),
                        -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out), spacing


def _run(work_pixel_mm: float, queue) -> None:
    from CovidCTScreenLib.lungs import lung_mask as lm

    hu, spacing = _volume()
    lm.WORK_PIXEL_MM = work_pixel_mm
    t = time.perf_counter()
    mask = lm.lung_mask(hu, spacing)
    seconds = time.perf_counter() - t
    queue.put((seconds, mask.volumes_ml(spacing)["total"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def main() -> None:
    ctx = mp.get_context("spawn")
    rows = []
    for name, px in (("working grid (shipped)", 1.6), ("baseline: full resolution", 0.01)):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(px, q))
        p.start()
        seconds, ml, peak_mb = q.get()
        p.join()
        rows.append((name, seconds, ml, peak_mb))
    print(f"lung mask of 512x512x141 real CT ({mp.cpu_count()} CPU cores)")
    for name, seconds, ml, peak_mb in rows:
        print(f"  {name:<28} {seconds:6.1f} s   lung volume {ml / 1000:.2f} L   peak RSS {peak_mb:6.0f} MB")
    print(f"  speed-up x{rows[1][1] / rows[0][1]:.1f}; target < 10 s")


if __name__ == "__main__":
    main()
