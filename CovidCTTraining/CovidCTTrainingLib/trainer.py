"""One trainer for slice classifiers: seeded, resumable, with progress and cancel.

Supervised transfer learning (seeds 002/004) with seed 000's augmentations. Each epoch ends
with a validation pass; the epoch with the best validation AUC is kept (the test split is never
seen). A checkpoint is written atomically after every epoch, and a killed run resumes from it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from CovidCTScreenLib.errors import Cancelled
from CovidCTScreenLib.inference import predict_logits, select_device
from CovidCTScreenLib.metrics import binary_metrics
from CovidCTScreenLib.networks import build_network, load_imagenet_weights

from .augment import augment


@dataclass
class TrainConfig:
    architecture: str = "efficientnet-lite0"
    pretrained: bool = True
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val: dict
    seconds: float
    best_epoch: int
    best_auc: float


@dataclass
class TrainResult:
    state_dict: dict
    val_logits: np.ndarray
    val_metrics: dict
    best_epoch: int
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          config: TrainConfig, workdir: str | Path, num_classes: int = 2,
          progress: Callable[[EpochReport], None] | None = None,
          cancel: Callable[[], bool] | None = None) -> TrainResult:
    """Train, select on validation AUC, return the best weights and their validation logits."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / "checkpoint.pt"
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    net = build_network(config.architecture, num_classes)
    if config.pretrained:
        load_imagenet_weights(net, config.architecture)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float32)
    class_weight = torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), device=device)
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    start_epoch, history, best = 0, [], {"auc": -1.0, "epoch": -1, "state": None}
    gen = torch.Generator().manual_seed(config.seed)

    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["config"] != asdict(config):
            raise RuntimeError(f"{ckpt_path} was written with another configuration; use a new output folder")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, history = ck["epoch"] + 1, ck["history"]
        best = {"auc": ck["best_auc"], "epoch": ck["best_epoch"], "state": ck["best_state"]}

    def validation_logits() -> np.ndarray:
        net.eval()
        return predict_logits(net, val_images, device, batch_size=64)

    x_all = torch.from_numpy(train_images)[:, None]
    y_all = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(x_all), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            if cancel and cancel():
                raise Cancelled("training cancelled; the last finished epoch is in the checkpoint")
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * steps_per_epoch + b, total_steps,
                                 config.warmup_epochs * steps_per_epoch, config.lr)
            x = augment(x_all[idx], gen).to(device)
            y = y_all[idx].to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = F.cross_entropy(net(x), y, weight=class_weight, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
        val_logits = validation_logits()
        val_prob = torch.softmax(torch.from_numpy(val_logits), 1)[:, 1].numpy()
        val = binary_metrics(val_labels, val_prob)
        if val["auc"] > best["auc"]:
            best = {"auc": val["auc"], "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
        rep = EpochReport(epoch + 1, config.epochs, float(np.mean(losses)), val, time.perf_counter() - t0,
                          best["epoch"] + 1, best["auc"])
        history.append(asdict(rep))
        _atomic_save({"config": asdict(config), "epoch": epoch, "model": net.state_dict(),
                      "optimizer": opt.state_dict(), "generator": gen.get_state(),
                      "torch_rng": torch.get_rng_state(), "history": history,
                      "best_auc": best["auc"], "best_epoch": best["epoch"], "best_state": best["state"]}, ckpt_path)
        if progress:
            progress(rep)

    net.load_state_dict(best["state"])
    val_logits = validation_logits()
    return TrainResult(state_dict=copy.deepcopy(best["state"]), val_logits=val_logits,
                       val_metrics=history[best["epoch"]]["val"], best_epoch=best["epoch"] + 1,
                       history=history, config=asdict(config))


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
