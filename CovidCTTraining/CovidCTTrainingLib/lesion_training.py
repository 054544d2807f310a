"""Train the GGO / consolidation segmentation UNet on the Inf-Net multi-class slices.

Data: the 50 labelled Inf-Net slices (``multiclass/images/N.jpg`` 8-bit display images,
``multiclass/masks/N.png`` with 0 background, 1 ground-glass opacity, 2 consolidation). Inf-Net has no
patient ids, so the held-out validation split is **by slice** (fixed seed): slices of the same patient
may fall on both sides, which makes the validation Dice optimistic.

Method: MONAI 2D ``UNet`` (residual units), Dice + cross-entropy loss (``monai.losses.DiceCELoss``),
AdamW with cosine decay, MONAI dictionary augmentations (affine incl. zoom, flip, noise, contrast),
everything seeded. Inputs go through ``preprocess.prepare_image`` (the shared path); masks are resized
by nearest neighbour. No epoch is selected on the validation split: the shipped weights are those of the
last epoch, so the reported validation Dice is measured once on data the training never looked at.
No SimpleITK here (torch, MONAI, numpy and PIL only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.lesion_seg import (
    ARCHITECTURE,
    LESION_LABELS,
    build_lesion_network,
    labels_at,
)
from CovidCTScreenLib.metrics import dice, iou
from CovidCTScreenLib.preprocess import prepare_image

CLASS_NAMES = {1: "ggo", 2: "consolidation"}


@dataclass
class Slice:
    name: str
    image: np.ndarray  # (h, w) uint8 display image
    mask: np.ndarray  # (h, w) uint8, 0/1/2


@dataclass
class LesionConfig:
    size: int = 256
    channels: tuple = (16, 32, 64, 128, 256)
    strides: tuple = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    n_val: int = 10
    seed: int = 0
    threads: int = 2
    max_minutes: float = 30.0  # safety stop; the card records the epochs actually run
    stop_epoch: int = 0  # > 0: run only the first ``stop_epoch`` epochs of the ``epochs``-long schedule
    log_every: int = 10

    def network_spec(self) -> dict:
        return {"architecture": ARCHITECTURE, "channels": list(self.channels), "strides": list(self.strides),
                "num_res_units": self.num_res_units, "dropout": self.dropout}


def load_multiclass(root: str | Path) -> list[Slice]:
    """The Inf-Net multi-class slices (sorted by number); checks that mask values are within {0, 1, 2}."""
    from PIL import Image

    root = Path(root)
    img_dir, mask_dir = root / "multiclass" / "images", root / "multiclass" / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise InputError(f"Inf-Net multi-class data not found under {root} (expected multiclass/images and masks)")
    out = []
    for mask_path in sorted(mask_dir.glob("*.png"), key=lambda p: int(p.stem)):
        with Image.open(img_dir / f"{mask_path.stem}.jpg") as im:
            image = np.asarray(im.convert("L"))
        with Image.open(mask_path) as m:
            mask = np.asarray(m)
        if mask.shape != image.shape or not set(np.unique(mask).tolist()) <= {0, 1, 2}:
            raise InputError(f"{mask_path}: mask shape {mask.shape} / values {np.unique(mask)} do not fit the image")
        out.append(Slice(mask_path.stem, image, mask))
    return out


def split_by_slice(slices: list[Slice], n_val: int, seed: int) -> tuple[list[Slice], list[Slice]]:
    """Fixed random split by slice (Inf-Net has no patient ids); validation names come back sorted."""
    order = np.random.default_rng(seed).permutation(len(slices))
    val_idx = set(order[:n_val].tolist())
    train = [s for i, s in enumerate(slices) if i not in val_idx]
    val = sorted((s for i, s in enumerate(slices) if i in val_idx), key=lambda s: int(s.name))
    return train, val


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``size`` x ``size``."""
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))


def segmentation_scores(preds: list[np.ndarray], targets: list[np.ndarray]) -> dict:
    """Per-class Dice / IoU pooled over all pixels of all slices, and the mean of per-slice Dice
    (slices where both prediction and reference lack the class are left out of that mean)."""
    out = {}
    for c, name in {**CLASS_NAMES, 3: "lesion"}.items():
        pm = [a > 0 if c == 3 else a == c for a in preds]
        tm = [a > 0 if c == 3 else a == c for a in targets]
        p, t = np.concatenate([a.ravel() for a in pm]), np.concatenate([a.ravel() for a in tm])
        per = [d for d in (dice(a, b) for a, b in zip(pm, tm)) if not np.isnan(d)]
        out[name] = {"dice_pooled": dice(p, t), "iou_pooled": iou(p, t),
                     "dice_mean_per_slice": float(np.mean(per)) if per else float("nan"),
                     "slices_with_class": int(sum(b.any() for b in tm))}
    return out


def _augmentation(size: int, seed: int):
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
    )

    aug = Compose([
        # zoom range covers both Inf-Net's body crops and the tighter lung-box crops used on HU input
        RandAffined(keys=("image", "label"), prob=0.9, rotate_range=0.26, scale_range=(-0.25, 0.15),
                    translate_range=(0.06 * size, 0.06 * size), shear_range=0.05,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys="image", prob=0.3, factors=0.1),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ])
    aug.set_random_state(seed)
    return aug


def predict_labels(net, images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Label maps at each image's own size (network at ``size``, probabilities resized back)."""
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for image in images:
            x = torch.from_numpy(prepare_image(image, size))[None, None]
            prob = torch.softmax(net(x), 1)[0].numpy()
            out.append(labels_at(prob, image.shape[:2]))
    return out


def train(train_slices: list[Slice], val_slices: list[Slice], config: LesionConfig, log=print) -> dict:
    """Train; returns {"state_dict", "history", "epochs_run", "seconds", "validation"} (last-epoch weights)."""
    import torch
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    torch.set_num_threads(config.threads)
    set_determinism(seed=config.seed)
    torch.manual_seed(config.seed)
    size = config.size
    images = np.stack([prepare_image(s.image, size) for s in train_slices])
    masks = np.stack([resize_mask(s.mask, size) for s in train_slices])
    net = build_lesion_network(config.network_spec(), len(LESION_LABELS))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    aug = _augmentation(size, config.seed)
    rng = np.random.default_rng(config.seed)
    history, t0, epochs_run = [], time.time(), 0
    for epoch in range(1, config.epochs + 1):
        net.train()
        order, losses = rng.permutation(len(images)), []
        for i in range(0, len(order), config.batch_size):
            batch = [aug({"image": images[j][None], "label": masks[j][None].astype(np.float32)})
                     for j in order[i:i + config.batch_size]]
            x = torch.stack([torch.as_tensor(np.asarray(b["image"]), dtype=torch.float32) for b in batch])
            y = torch.stack([torch.as_tensor(np.asarray(b["label"])).round().long() for b in batch])
            opt.zero_grad()
            loss = loss_fn(net(x.clamp(0, 1)), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        epochs_run = epoch
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1)}
        if epoch % config.log_every == 0 or epoch == config.epochs:
            scores = segmentation_scores(predict_labels(net, [s.image for s in val_slices], size),
                                         [s.mask for s in val_slices])
            entry.update({f"val_dice_{k}": round(v["dice_pooled"], 4) for k, v in scores.items()})
        history.append(entry)
        log(" ".join(f"{k}={v}" for k, v in entry.items()))
        if config.stop_epoch and epoch >= config.stop_epoch:
            break
        if time.time() - t0 > config.max_minutes * 60:
            log(f"stopping after epoch {epoch}: time limit {config.max_minutes} min reached")
            break
    validation = segmentation_scores(predict_labels(net, [s.image for s in val_slices], size),
                                     [s.mask for s in val_slices])
    return {"state_dict": net.state_dict(), "history": history, "epochs_run": epochs_run,
            "seconds": round(time.time() - t0, 1), "validation": validation}


def config_dict(config: LesionConfig) -> dict:
    d = asdict(config)
    d["channels"], d["strides"] = list(config.channels), list(config.strides)
    return d


def render_model_card(card: dict) -> str:
    """MODEL_CARD.md for a lesion package (every figure comes from model.json)."""
    v, t = card["validation"], card["training"]
    rows = "\n".join(f"| {name} | {m['dice_pooled']:.3f} | {m['iou_pooled']:.3f} | {m['dice_mean_per_slice']:.3f} | "
                     f"{m['slices_with_class']} |" for name, m in v["scores"].items())
    limits = "\n".join(f"- {x}" for x in card["limits"])
    net = card["network"]
    return f"""# Model card: {card['name']}

**Research use only. Not a medical device; not for clinical diagnosis.**

- Task: {card['task']}: per-pixel labels {card['labels']} on axial CT slices
- Network: MONAI 2D UNet, channels {net['channels']}, strides {net['strides']}, {net['num_res_units']} residual
  units, dropout {net['dropout']}; {card['parameters']:,} parameters
- Input: {card['input']['description']}
- Weights: `weights.safetensors` ({card['weights_dtype']}), sha256 `{card['weights_sha256']}` (checked on every load)

## Data and split
- Dataset: {t['dataset']}
- Split: {t['split']}
- Training slices ({len(t['train_slices'])}): {', '.join(t['train_slices'])}
- Validation slices ({len(v['slices'])}): {', '.join(v['slices'])}
- Not used: {t['not_used']}

## Training
- {t['method']}
- {t['epochs_run']} epochs, {t['seconds'] / 60:.1f} min on {t['hardware']}; seed {t['config']['seed']}{("; " + t["stopped"]) if "stopped" in t else ""}
- Reproduce: `{t['command']}`

## Validation (held-out Inf-Net slices, at each slice's own resolution, last-epoch weights)
| class | Dice (pooled) | IoU (pooled) | mean per-slice Dice | val slices with the class |
|---|---|---|---|---|
{rows}

{v['note']}

## Limits
{limits}
"""
