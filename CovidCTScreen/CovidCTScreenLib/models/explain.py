"""Grad-CAM heatmaps: the raw, ReLU'd map of the last convolution, one scale per study, into the CT grid.

Plain hooks rather than ``monai.visualize.GradCAM``: MONAI backpropagates through the whole network and
its default normaliser flips magnitudes (1 - normalised map); hooks stop the backward at the target layer,
so the classifier pass itself yields the map (``Testing/benchmarks/bench_gradcam.py`` measures both).
"""

from __future__ import annotations

import numpy as np

STUDY_PERCENTILE = 99.0  # the study's raw CAM inside the lungs at this percentile maps to 1


class GradCam:
    """``with GradCam(net, layer) as cam: logits, maps = cam(x, class_index)``: (B, C) logits and the raw
    ReLU'd Grad-CAM (B, h, w) of ``class_index`` at ``layer``, from one forward pass. Parameters are frozen
    meanwhile, so only the part after ``layer`` records a graph, and the backward stops at ``layer``."""

    def __init__(self, net, layer: str):
        self.net, self.layer, self._act = net, net.get_submodule(layer), None

    def __enter__(self) -> GradCam:
        self._flags = [p.requires_grad for p in self.net.parameters()]
        self.net.requires_grad_(False)
        self._hook = self.layer.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()
        for p, flag in zip(self.net.parameters(), self._flags):
            p.requires_grad_(flag)

    def _keep(self, module, inputs, output):
        import torch

        if torch.is_grad_enabled():  # not in the (inference-mode) mirror pass
            self._act = output.detach().requires_grad_()
            return self._act.clone()  # later in-place ops (DenseNet's ReLU) must not touch the leaf

    def __call__(self, x, class_index: int):
        import torch

        with torch.enable_grad():
            logits = self.net(x)
            (grad,) = torch.autograd.grad(logits[:, class_index].sum(), self._act)
        act, grad = self._act.detach().float(), grad.float()
        maps = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
        return logits.detach(), maps


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A low-resolution map resized (bilinear) to ``shape``."""
    from skimage.transform import resize

    return resize(np.asarray(cam, np.float32), shape, order=1).astype(np.float32)


def to_volume(cams: np.ndarray, weights: np.ndarray, indices: np.ndarray, box: tuple[slice, slice],
              shape: tuple[int, int, int], lungs: np.ndarray, percentile: float = STUDY_PERCENTILE) -> np.ndarray:
    """The heatmap on the CT grid, in [0, 1], zero outside the lungs: each slice's raw Grad-CAM resized into
    the lung box, divided by one scale for the whole study (``percentile`` of the raw CAM inside the lungs of
    the scored slices; above it clipped to 1), times the slice's weight (its calibrated P(COVID-19)).
    ``lungs``: the lung mask or the lung labels (non-zero = lung), read slice by slice (no full-volume copy).

    One scale keeps slices comparable (weak evidence stays dim, unlike a per-slice max); the weight keeps
    a slice the model finds normal from glowing.
    """
    heat = np.zeros(shape, np.float32)
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    for cam, k in zip(cams, indices):
        heat[k, box[0], box[1]] = resize_map(cam, (h, w)) * (lungs[k, box[0], box[1]] > 0)
    # the raw CAM inside the lungs, 1 in 4 voxels suffices
    inside = np.concatenate([heat[k, ::2, ::2][lungs[k, ::2, ::2] > 0] for k in indices])
    scale = float(np.percentile(inside, percentile)) if inside.size else 0.0
    scale = scale if scale > 0 else float(inside.max(initial=0.0))  # when most of the lung has no evidence
    if scale > 0:  # else every map is zero already
        for weight, k in zip(weights, indices):
            part = heat[k, box[0], box[1]]  # outside the lung box the map is zero already
            part[:] = np.minimum(part / scale, 1.0) * weight
    return heat
