"""The training methods of the seed papers: names, what each does, the hyper-parameters each seed gives.

No torch here (the CLI and the Slicer module read it); the objectives themselves are in ``losses.py``.
"""

from __future__ import annotations

METHODS = ("supervised", "consistency", "ssresnet", "selftrans", "crnet")
DESCRIPTIONS = {
    "supervised": "supervised transfer learning (seeds 002/004): class-weighted cross-entropy, seed 000 augmentations",
    "consistency": "semi-supervised consistency (seed 000): class-weighted cross-entropy on labelled images + lambda * "
                   "squared distance of the feature vectors of each image and its augmented copy, on labelled and "
                   "unlabelled images",
    "ssresnet": "two-path semi-supervised ResNet (seed 001): shared trunk, supervised and unsupervised paths, "
                "weighted cross-entropy + lambda * MSE(z_sup, z_unsup) on labelled and unlabelled images",
    "selftrans": "Self-Trans (seed 003): MoCo contrastive pre-training on unlabelled slices, then on the labelled "
                 "training images without labels, then supervised fine-tuning",
    "crnet": "CRNet (seed 003's light network) trained from scratch with class-weighted cross-entropy",
}
# Hyper-parameters each method's seed gives, applied unless set explicitly (TrainConfig has the rest).
METHOD_DEFAULTS = {
    "supervised": {},
    "consistency": {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 12, "unlabelled_batch_size": 12},
    # seed 001 trains with Adam at 0.1 and batch 256; 1e-3 is the usual Adam rate (0.1 was not tried here).
    "ssresnet": {"architecture": "ssresnet", "pretrained": False, "lr": 1e-3},
    "selftrans": {"lr": 1e-4, "pretrain_epochs": 10},
    "crnet": {"architecture": "crnet", "pretrained": False, "lr": 1e-4},
}


def check_method(method: str, architecture: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if (method == "ssresnet") != (architecture == "ssresnet"):
        raise ValueError("method ssresnet needs architecture ssresnet, and that architecture only that method")
    if method == "crnet" and architecture != "crnet":
        raise ValueError("method crnet trains architecture crnet")
