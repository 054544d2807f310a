"""The seed papers' training objectives as small loss modules, plugged into one trainer (``trainer.py``).

Each module holds the classifier as ``net``; ``prepare(x, y, u, generator)`` makes the step's inputs on the CPU
(augmentations) and ``forward(*inputs)`` returns the losses (``"loss"`` is the one minimised). Running the
whole objective in ``forward`` lets DistributedDataParallel wrap any of them.

- supervised (seeds 002/004) and crnet (seed 003's light net): class-weighted cross-entropy on augmented images.
- consistency (seed 000): cross-entropy + lambda * squared distance between the feature vectors of an image and
  its perturbed copy, on labelled and unlabelled images.
- ssresnet (seed 001): two-path SSResNet, weighted cross-entropy on z_sup + lambda * MSE(z_sup, z_unsup) on all.
- selftrans (seed 003): MoCo contrastive pre-training (``moco.py``), then the supervised objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment, intensity_augment


def logits_and_features(net: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``net`` and the feature vectors its final linear layer ``head`` receives."""
    seen = []
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        logits = net(x)
    finally:
        hook.remove()
    return logits, seen[0]


class Supervised(nn.Module):
    uses_unlabelled = False

    def __init__(self, net: nn.Module, class_weight: torch.Tensor, label_smoothing: float):
        super().__init__()
        self.net, self.label_smoothing = net, label_smoothing
        self.register_buffer("class_weight", class_weight)
        self.intensity = False  # also vary window / level, gamma, blur, noise, JPEG (augment.intensity_augment)

    def perturb(self, x, generator):
        x = augment(x, generator)
        return intensity_augment(x, generator) if self.intensity else x

    def prepare(self, x, y, u, generator):
        return self.perturb(x, generator), y

    def forward(self, x, y):
        ce = F.cross_entropy(self.net(x), y, weight=self.class_weight, label_smoothing=self.label_smoothing)
        return {"loss": ce, "ce": ce}


class Consistency(Supervised):
    uses_unlabelled = True

    def __init__(self, net, class_weight, label_smoothing, head: nn.Module, weight: float):
        super().__init__(net, class_weight, label_smoothing)
        self.weight = weight
        self._head = [head]  # a plain list: the head is already registered inside net

    def prepare(self, x, y, u, generator):
        return self.perturb(x, generator), y, x, u, self.perturb(u, generator)

    def forward(self, xa, y, x, u, ua):
        n, m = len(xa), len(u)
        logits, feats = logits_and_features(self.net, self._head[0], torch.cat([xa, x, u, ua]))
        ce = F.cross_entropy(logits[:n], y, weight=self.class_weight, label_smoothing=self.label_smoothing)
        clean = torch.cat([feats[n:2 * n], feats[2 * n:2 * n + m]])
        perturbed = torch.cat([feats[:n], feats[2 * n + m:]])
        consistency = F.mse_loss(perturbed.float(), clean.float())
        return {"loss": ce + self.weight * consistency, "ce": ce, "consistency": consistency}


class TwoPath(Supervised):
    uses_unlabelled = True

    def __init__(self, net, class_weight, label_smoothing, weight: float):
        super().__init__(net, class_weight, label_smoothing)
        self.weight = weight

    def prepare(self, x, y, u, generator):
        return self.perturb(x, generator), y, self.perturb(u, generator)

    def forward(self, x, y, u):
        z_sup, z_unsup = self.net.backbone.both(self.net.normalise(torch.cat([x, u])))
        wce = F.cross_entropy(z_sup[:len(x)], y, weight=self.class_weight, label_smoothing=self.label_smoothing)
        mse = F.mse_loss(z_sup.float(), z_unsup.float())  # 1/(C|B|) sum ||z_sup - z_unsup||^2 (seed 001 alg. 1)
        return {"loss": wce + self.weight * mse, "wce": wce, "mse": mse}


def training_loss(config, net: nn.Module, head: nn.Module, class_weight: torch.Tensor) -> Supervised:
    """The supervised or semi-supervised objective of ``config.method`` (Self-Trans fine-tunes with Supervised)."""
    if config.method == "consistency":
        loss = Consistency(net, class_weight, config.label_smoothing, head, config.consistency_weight)
    elif config.method == "ssresnet":
        loss = TwoPath(net, class_weight, config.label_smoothing, config.consistency_weight)
    else:
        loss = Supervised(net, class_weight, config.label_smoothing)
    loss.intensity = config.intensity_augment
    return loss
