"""screen(): CT in, lung mask, slice scores, Grad-CAM, verdict out. Called by the CLI, the Slicer logic and tests."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import Cancelled, InputError
from ..lungs.lung_mask import LungMask, read_lung_mask
from ..lungs.lung_mask import lung_mask as compute_lung_mask
from ..lesions.manifestations import Manifestations
from ..models.model_package import SLICE_CLASSIFICATION, ModelPackage, load_package
from .verdict import Verdict, category_from_report, study_verdict
from ..input.volume_io import CTVolume, load_ct, validate_ct

# Progress stages and the share of the run each one ends at.
STAGES = {"load": 0.05, "lung mask": 0.2, "inference": 0.6, "grad-cam": 0.65, "lesions": 0.95, "report": 1.0}
Progress = Callable[[str, float], None]


@dataclass
class ScreenResult:
    volume: CTVolume
    mask: LungMask
    model: ModelPackage
    slice_indices: np.ndarray
    probabilities: np.ndarray  # (N, C) calibrated, columns in model.labels order
    heatmap: np.ndarray | None  # (z, y, x) float32 in [0, 1], CT grid
    verdict: Verdict
    device: str
    manifestations: Manifestations | None = None  # GGO / consolidation extent and streak candidates
    timings: dict = field(default_factory=dict)

    @property
    def positive_probability(self) -> np.ndarray:
        return self.probabilities[:, self.model.positive_index]

    @property
    def lung_volume_ml(self) -> dict[str, float]:
        return self.mask.volumes_ml(self.volume.spacing)


def _stage_reporter(progress: Progress | None, stage: str) -> Callable[[float], None]:
    names = list(STAGES)
    start = STAGES[names[names.index(stage) - 1]] if names.index(stage) else 0.0

    def report(fraction: float) -> None:
        if progress:
            progress(stage, start + (STAGES[stage] - start) * fraction)

    return report


@contextmanager
def cancel_watch(cancel: Callable[[], bool] | None, poll_s: float = 0.1):
    """Make ``cancel()`` stop the job within ``poll_s`` at any point of the Python code, also inside loops that
    have no cancel hook of their own (lung mask, HU bands): a watcher thread polls ``cancel()`` and interrupts
    the main thread, where the interrupt is raised as ``Cancelled``. A call that stays in C (one network batch,
    one SciPy filter) finishes first. Off the main thread only the explicit checks between steps remain."""
    if cancel is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    import _thread

    fired, done = threading.Event(), threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        if fired.is_set():
            raise Cancelled("cancelled by the user")
        if callable(previous):
            return previous(signum, frame)
        raise KeyboardInterrupt

    def watch():
        while not done.wait(poll_s):
            if cancel():
                fired.set()
                _thread.interrupt_main()
                return

    signal.signal(signal.SIGINT, on_interrupt)
    watcher = threading.Thread(target=watch, name="covidct-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        try:
            watcher.join()
        finally:
            signal.signal(signal.SIGINT, previous)


def screen(source: str | os.PathLike | CTVolume, model: str | os.PathLike | ModelPackage | None = None,
           device: str = "auto", batch_size: int | None = None, heatmap: bool = True, lesions: bool = True,
           progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
           lung_mask: str | os.PathLike | LungMask | None = None, lung_mask_name: str | None = None,
           lesion_net: bool = True, series: str | None = None, lesion_model: str | None = None) -> ScreenResult:
    """Screen one CT. ``source`` is a path (DICOM folder, NRRD, NIfTI, MHA) or a loaded ``CTVolume``;
    ``series`` picks a series UID of a DICOM folder holding several (default: ``volume_io.choose_series``).
    ``lesions`` adds the GGO / consolidation extent and possible fibrotic streaks (``manifestations``);
    ``lesion_net=False`` leaves the lesion UNet out of it; ``lesion_model`` picks the lesion package.
    ``lung_mask``: a lung mask the user has (file on the CT grid, see ``lung_mask.read_lung_mask``, or a
    ``LungMask``) instead of the computed one; ``lung_mask_name`` names it in the report (a Slicer segmentation).
    ``cancel()`` turning true raises ``Cancelled`` (see ``cancel_watch``)."""
    with cancel_watch(cancel):
        return _screen(source, model, device, batch_size, heatmap, lesions, progress, cancel, lung_mask,
                       lung_mask_name, lesion_net, series, lesion_model)


def _screen(source, model, device, batch_size, heatmap, lesions, progress, cancel, lung_mask, lung_mask_name,
            lesion_net, series, lesion_model) -> ScreenResult:
    from ..models.explain import to_volume
    from ..models.inference import lung_slices, probabilities_and_gradcam, select_device

    def check_cancel() -> None:
        if cancel and cancel():
            raise Cancelled("cancelled by the user")

    timings = {}
    t = time.perf_counter()
    package = model if isinstance(model, ModelPackage) else load_package(model)
    package.require(SLICE_CLASSIFICATION, "screening a CT")
    dev = select_device(device)
    if isinstance(source, CTVolume):
        volume = source
        validate_ct(volume)
    else:
        volume = load_ct(Path(source), series)
    timings["load_s"] = time.perf_counter() - t
    _stage_reporter(progress, "load")(1.0)
    check_cancel()

    t = time.perf_counter()
    if lung_mask is None:
        mask = compute_lung_mask(volume.hu, volume.spacing, keep_body=False)
    elif isinstance(lung_mask, LungMask):
        if lung_mask.labels.shape != volume.shape:
            raise InputError(f"lung mask of shape {lung_mask.labels.shape} does not match the CT {volume.shape}")
        mask = lung_mask
    else:
        mask = read_lung_mask(lung_mask, volume, lung_mask_name)
    slices = lung_slices(volume.hu, mask.lungs, volume.spacing, package.info.input_size, package.info.hu_window)
    timings["lung_mask_s"] = time.perf_counter() - t
    _stage_reporter(progress, "lung mask")(1.0)
    check_cancel()

    t = time.perf_counter()
    net = package.build(dev)
    # one classifier pass per slice (and its mirror) gives the probabilities and the Grad-CAM
    probabilities, cams = probabilities_and_gradcam(package, net, slices.images, dev, batch_size,
                                                    _stage_reporter(progress, "inference"), cancel, heatmap)
    timings["inference_s"] = time.perf_counter() - t
    indices, box = slices.indices, slices.box
    del slices, net  # the model inputs (150 MB at 1000 slices) and the classifier are not needed any more

    pos = probabilities[:, package.positive_index]
    verdict = study_verdict(indices, pos, package.info.slice_threshold, package.info.study_min_fraction)
    heat = None
    if heatmap:
        check_cancel()
        t = time.perf_counter()
        heat = to_volume(cams, pos, indices, box, volume.shape, mask.labels)
        timings["gradcam_s"] = time.perf_counter() - t
    _stage_reporter(progress, "grad-cam")(1.0)
    check_cancel()
    found = None
    if lesions:
        from ..lesions.manifestations import measure

        t = time.perf_counter()
        found = measure(volume, mask, lesion_model, device=str(dev), progress=_stage_reporter(progress, "lesions"),
                        cancel=cancel, learned=lesion_net)
        verdict = replace(verdict, **category_from_report(verdict.to_dict(), found.summary, found.distribution))
        timings["lesions_s"] = time.perf_counter() - t
        timings.update({f"lesions_{k}": v for k, v in found.timings.items()})
    _stage_reporter(progress, "lesions")(1.0)
    check_cancel()
    return ScreenResult(volume=volume, mask=mask, model=package, slice_indices=indices,
                        probabilities=probabilities, heatmap=heat, verdict=verdict, device=str(dev),
                        manifestations=found, timings=timings)


def screen_to_folder(source: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
                     progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                     **kwargs) -> ScreenResult:
    """``screen`` and write the report folder (all or nothing; a cancel while writing leaves nothing)."""
    from ..report.output_folder import check_output_folder
    from ..report.report import write_report

    check_output_folder(out_dir, overwrite, inputs=[] if isinstance(source, CTVolume) else [source])
    with cancel_watch(cancel):
        result = screen(source, progress=progress, cancel=cancel, **kwargs)
        t = time.perf_counter()
        write_report(result, out_dir, overwrite=overwrite)
        result.timings["report_s"] = time.perf_counter() - t
    _stage_reporter(progress, "report")(1.0)
    return result
