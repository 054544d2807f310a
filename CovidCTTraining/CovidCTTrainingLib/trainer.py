"""One trainer for every method: seeded, resumable, data-parallel, with progress and cancel.

A run is a list of phases: Self-Trans first pre-trains with MoCo on the unlabelled slices and then on the
labelled training images without their labels; every method ends with the training phase of its objective
(``methods.py``). Each epoch of the training phase ends with a validation pass and the epoch with the best
validation AUC is kept (the test split is never seen). A checkpoint is written atomically after every epoch of
every phase, and a killed run resumes from it to the same state: shuffling, augmentation and dropout are seeded
from (seed, phase, epoch / step, rank), so no random state has to be restored.
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

from CovidCTScreenLib.errors import Cancelled
from CovidCTScreenLib.models.inference import predict_logits, select_device
from CovidCTScreenLib.evaluation.metrics import binary_metrics
from CovidCTScreenLib.models.networks import HEADS, build_network, load_imagenet_weights

from . import distributed
from .losses import training_loss
from .methods import METHOD_DEFAULTS, check_method
from .moco import MoCo


@dataclass
class TrainConfig:
    method: str = "supervised"
    architecture: str = "efficientnet-lite0"
    pretrained: bool = True  # ImageNet weights (EfficientNet-Lite0 only)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-4  # the body's learning rate, and the head's unless head_lr is set
    head_lr: float | None = None  # seed 002: 5e-4 for the final layer, 5e-5 for the rest
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    consistency_weight: float = 0.3  # lambda of seeds 000 / 001
    unlabelled_batch_size: int = 16
    pretrain_epochs: int = 0  # MoCo epochs of each Self-Trans pre-training phase
    moco_batch_size: int = 128
    moco_lr: float = 0.015
    moco_queue: int = 512
    moco_momentum: float = 0.999
    moco_temperature: float = 0.2
    seed: int = 0
    device: str = "auto"
    init_model: str | None = None  # fine-tune from this model package's weights instead of ImageNet
    freeze_blocks: int = 0  # EfficientNet-Lite0: keep the stem and the first N of its 16 blocks fixed
    intensity_augment: bool = False  # augment.intensity_augment on every training image
    select: str = "best"  # "best": the epoch with the best validation AUC; "last": the final epoch


def make_config(method: str, **overrides) -> TrainConfig:
    """TrainConfig of ``method``: its seed's defaults (methods.METHOD_DEFAULTS), then the overrides that are set."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(**{**METHOD_DEFAULTS[method], "method": method, **given})


@dataclass
class EpochReport:
    phase: str
    epoch: int
    epochs: int
    step: int  # optimiser steps done in this phase
    train_loss: float
    losses: dict  # mean of each loss term over the epoch
    val: dict  # validation metrics (empty in pre-training)
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
    image_size: int = 0


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised so a balanced set has weight 1 per class."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    return torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)))


def train(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
          config: TrainConfig, workdir: str | Path, num_classes: int = 2,
          progress: Callable[[EpochReport], None] | None = None, cancel: Callable[[], bool] | None = None,
          unlabelled_images: np.ndarray | None = None) -> TrainResult:
    """Train with ``config.method``, select on validation AUC, return the best weights and their validation logits.

    Images are (N, H, W) float32 in [0, 1]; ``unlabelled_images`` feed the semi- and self-supervised methods.
    """
    check_method(config.method, config.architecture)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    net = build_network(config.architecture, num_classes)
    if config.init_model:
        _load_package_weights(net, config.init_model, num_classes)
    elif config.pretrained:
        load_imagenet_weights(net, config.architecture)
    for p in (p for m in frozen_modules(net, config) for p in m.parameters()):
        p.requires_grad = False
    net.to(device)
    unlabelled = unlabelled_images if unlabelled_images is not None else np.empty((0, *train_images.shape[1:]),
                                                                                   np.float32)
    run = {"config": config, "device": device, "progress": progress, "cancel": cancel}

    if config.method == "selftrans" and config.pretrain_epochs > 0:
        moco = MoCo(net, HEADS[config.architecture], queue=config.moco_queue, momentum=config.moco_momentum,
                    temperature=config.moco_temperature).to(device)
        for index, (name, images) in enumerate((("pretrain-unlabelled", unlabelled),
                                                 ("pretrain-labelled", train_images))):
            if len(images):
                _run_phase(index, name, moco, images, None, unlabelled, None, None, workdir / f"{name}.pt", **run)
        net = moco.restore_head()

    loss = training_loss(config, net, net.get_submodule(HEADS[config.architecture]),
                         class_weights(train_labels, num_classes)).to(device)
    history, best = _run_phase(2, "train", loss, train_images, train_labels, unlabelled, val_images, val_labels,
                               workdir / "checkpoint.pt", **run)
    net.load_state_dict(best["state"])
    net.eval()
    return TrainResult(state_dict=copy.deepcopy(best["state"]), val_logits=predict_logits(net, val_images, device, 64),
                       val_metrics=history[best["epoch"]]["val"], best_epoch=best["epoch"] + 1, history=history,
                       config=asdict(config), image_size=int(train_images.shape[-1]))


def _load_package_weights(net: torch.nn.Module, package: str, num_classes: int) -> None:
    from CovidCTScreenLib.models.model_package import load_package

    pkg = load_package(package)
    if len(pkg.labels) != num_classes:
        raise ValueError(f"{package} has {len(pkg.labels)} outputs; this training needs {num_classes}")
    net.load_state_dict(pkg.build("cpu").state_dict())


def frozen_modules(net: torch.nn.Module, config: TrainConfig) -> list[torch.nn.Module]:
    """The modules ``config.freeze_blocks`` keeps fixed (weights and batch-norm statistics)."""
    if not config.freeze_blocks:
        return []
    if config.architecture != "efficientnet-lite0":
        raise ValueError("freeze_blocks is defined for efficientnet-lite0 only")
    body = net.backbone
    return [body._conv_stem, body._bn0, *body._blocks[:config.freeze_blocks]]


def _optimizer(phase: str, loss: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD for MoCo (seed 003); AdamW otherwise, the final layer in its own group at ``head_lr`` (seed 002)."""
    params = [(n, p) for n, p in loss.named_parameters() if p.requires_grad]
    if phase.startswith("pretrain"):
        return torch.optim.SGD([p for _, p in params], lr=config.moco_lr, momentum=0.9, weight_decay=1e-4)
    head = "net." + HEADS[config.architecture] + "."
    groups = [{"params": [p for n, p in params if not n.startswith(head)], "base_lr": config.lr},
              {"params": [p for n, p in params if n.startswith(head)], "base_lr": config.head_lr or config.lr}]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def _run_phase(index: int, phase: str, loss: torch.nn.Module, images: np.ndarray, labels: np.ndarray | None,
               unlabelled: np.ndarray, val_images: np.ndarray | None, val_labels: np.ndarray | None, ckpt_path: Path,
               config: TrainConfig, device: torch.device, progress, cancel) -> tuple[list, dict]:
    """Train ``loss`` (its ``net`` in place) for one phase; returns the epoch history and the best validated state."""
    rank, world = distributed.rank_and_size()
    pretrain = phase.startswith("pretrain")
    epochs = config.pretrain_epochs if pretrain else config.epochs
    batch_size = config.moco_batch_size if pretrain else config.batch_size
    net = loss.net
    opt = _optimizer(phase, loss, config)
    for g in opt.param_groups:
        g.setdefault("base_lr", config.moco_lr)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    steps_per_epoch = math.ceil(len(images) / batch_size)
    warmup = 0 if pretrain else config.warmup_epochs * steps_per_epoch
    start_epoch, history, best = 0, [], {"auc": -1.0, "epoch": -1, "state": None}

    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ck["config"] != asdict(config):
            raise RuntimeError(f"{ckpt_path} was written with another configuration; use a new output folder")
        loss.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, history = ck["epoch"] + 1, ck["history"]
        best = {"auc": ck["best_auc"], "epoch": ck["best_epoch"], "state": ck["best_state"]}

    model = distributed.wrap(loss, device)
    x_all = torch.from_numpy(images)[:, None]
    y_all = torch.from_numpy(np.asarray(labels if labels is not None else np.zeros(len(images)), dtype=np.int64))
    u_all = torch.from_numpy(unlabelled)[:, None]
    u_size = config.unlabelled_batch_size // world if loss.uses_unlabelled and len(u_all) else 0
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        for m in frozen_modules(net, config):
            m.eval()
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(_seed(config.seed, index, epoch)))
        sums: dict[str, float] = {}
        steps = 0
        for b in range(steps_per_epoch):
            if cancel and cancel():
                raise Cancelled("training cancelled; the last finished epoch is in the checkpoint")
            idx = order[b * batch_size:(b + 1) * batch_size]
            if len(idx) < 2 * world:
                continue
            step = epoch * steps_per_epoch + b
            g = torch.Generator().manual_seed(_seed(config.seed, index, step, rank))
            torch.manual_seed(_seed(config.seed, index, step, rank, 1))  # dropout
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(step, steps_per_epoch * epochs, warmup)
            idx = idx[rank::world]
            u = u_all[torch.randint(len(u_all), (u_size,), generator=g)] if u_size else u_all[:0]
            inputs = [t.to(device) for t in loss.prepare(x_all[idx], y_all[idx], u, g)]
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                losses = model(*inputs)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(opt)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            steps += 1
        distributed.sync_buffers(loss)
        val = {}
        if val_images is not None:
            net.eval()
            val_logits = predict_logits(net, val_images, device, batch_size=64)
            val = binary_metrics(val_labels, torch.softmax(torch.from_numpy(val_logits), 1)[:, 1].numpy())
            if val["auc"] > best["auc"] or config.select == "last":
                best = {"auc": val["auc"], "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        rep = EpochReport(phase, epoch + 1, epochs, (epoch + 1) * steps_per_epoch, means.pop("loss", float("nan")),
                          means, val, time.perf_counter() - t0, best["epoch"] + 1, best["auc"])
        history.append(asdict(rep))
        if rank == 0:
            _atomic_save({"config": asdict(config), "epoch": epoch, "model": loss.state_dict(),
                          "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "history": history,
                          "best_auc": best["auc"], "best_epoch": best["epoch"], "best_state": best["state"]},
                         ckpt_path)
        distributed.barrier()
        if progress:
            progress(rep)
    return history, best


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
