"""Train the GGO / consolidation UNet on Inf-Net, report per-class Dice on the held-out slices, export the package.

Run (CPU: 30 min for 57 epochs on 2 shared cores; the shipped package's card has the exact command):
    nice -n 10 python scripts/train_lesion_model.py [--data ../shared/data] [--epochs 120]
Writes the run log and last-epoch state under runs/lesion-<time>/ (git-ignored) and the package
Resources/Models/covidct-lesion-unet-v1/ (model.json, weights.safetensors, MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--stop-epoch", type=int, default=0,
                    help="run only the first N epochs of the --epochs schedule (reproduces a time-limited run)")
    ap.add_argument("--out", type=Path, default=REPO / "Resources" / "Models" / "covidct-lesion-unet-v1")
    ap.add_argument("--runs", type=Path, default=REPO / "runs")
    args = ap.parse_args(argv)

    import torch

    from CovidCTScreenLib.model_package import CARD_NAME, save_package
    from CovidCTTrainingLib.lesion_training import (LesionConfig, config_dict, load_multiclass, render_model_card,
                                                    split_by_slice, train)

    config = LesionConfig(size=args.size, epochs=args.epochs, seed=args.seed, threads=args.threads,
                          max_minutes=args.max_minutes, stop_epoch=args.stop_epoch)
    run_dir = args.runs / time.strftime("lesion-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    def log(msg: str) -> None:
        print(msg, flush=True)
        with open(run_dir / "log.txt", "a") as f:
            f.write(msg + "\n")

    slices = load_multiclass(args.data / "infnet-semiseg")
    train_slices, val_slices = split_by_slice(slices, config.n_val, config.seed)
    log(f"Inf-Net multi-class: {len(slices)} labelled slices -> train {len(train_slices)}, val {len(val_slices)} "
        f"(by slice, seed {config.seed}); val = {[s.name for s in val_slices]}")
    result = train(train_slices, val_slices, config, log=log)
    torch.save(result["state_dict"], run_dir / "last.pt")
    (run_dir / "history.json").write_text(json.dumps(result["history"], indent=1))

    v = result["validation"]
    log(f"\nHeld-out validation ({len(val_slices)} slices, each at its own resolution), last-epoch weights:")
    log("class           Dice(pooled)  IoU(pooled)  meanDice/slice  slices-with-class")
    for name, m in v.items():
        log(f"{name:15s} {m['dice_pooled']:12.4f} {m['iou_pooled']:12.4f} {m['dice_mean_per_slice']:15.4f} "
            f"{m['slices_with_class']:18d}")

    state = result["state_dict"]
    n_params = int(sum(t.numel() for t in state.values() if t.dtype.is_floating_point))
    card = {
        "name": args.out.name,
        "task": "lesion-segmentation",
        "labels": ["background", "ggo", "consolidation"],
        "label_values": {"0": "background", "1": "ground-glass opacity (GGO)", "2": "consolidation"},
        "network": config.network_spec(),
        "parameters": n_params,
        "weights_dtype": "float32",
        "input": {"channels": 1, "size": config.size, "value_range": [0.0, 1.0], "hu_window": [-1100.0, 100.0],
                  "description": (f"one grey channel, {config.size} x {config.size}, [0, 1]. 8-bit display slices: "
                                  "preprocess.prepare_image (/255, resized). HU slices: cropped to the lung box "
                                  "(preprocess.lung_box) and windowed -1100..100 HU with "
                                  "preprocess.prepare_hu_slice, as the classifier's inputs")},
        "output": {"channels": 3, "activation": "softmax", "spatial": "same as input; resized back to the crop"},
        "training": {
            "dataset": ("Inf-Net COVID-SemiSeg multi-class training slices (Fan et al. 2020; 50 axial slices of the "
                        "MedSeg COVID-19 set, 8-bit display images cropped around the body; masks 0/1/2). "
                        "Licence: non-commercial"),
            "split": (f"fixed random split by slice (numpy default_rng seed {config.seed}): {len(train_slices)} train, "
                      f"{len(val_slices)} validation. Inf-Net has no patient ids, so slices of one patient can be "
                      "on both sides: the validation Dice is optimistic"),
            "train_slices": [s.name for s in train_slices],
            "not_used": ("the 1600 unlabelled Inf-Net slices (no semi-supervised step in v1) and the 48 Inf-Net "
                         "test slices (kept outside shared/)"),
            "method": ("MONAI UNet, DiceCELoss (softmax, one-hot), AdamW lr "
                       f"{config.lr} weight decay {config.weight_decay}, cosine decay, batch {config.batch_size}; "
                       "MONAI augmentation: RandAffine (rotate +-15 deg, zoom 0.75-1.15, shift 6 %, shear), "
                       "horizontal flip, gamma contrast, intensity scale, Gaussian noise; no epoch selection"),
            "config": config_dict(config),
            "epochs_run": result["epochs_run"],
            "seconds": result["seconds"],
            "hardware": f"CPU ({platform.processor() or platform.machine()}), {config.threads} threads, torch "
                        f"{torch.__version__}",
            "history": result["history"],
            "command": (f"nice -n 10 python scripts/train_lesion_model.py --epochs {config.epochs} --size {config.size} "
                        f"--seed {config.seed} --stop-epoch {result['epochs_run']}"),
        },
        "validation": {
            "slices": [s.name for s in val_slices],
            "scores": v,
            "note": ("Dice pooled = over all pixels of the validation slices together; per-slice mean leaves out "
                     "slices where neither prediction nor reference has the class. Reference masks are Inf-Net's; "
                     "computed with CovidCTScreenLib.metrics.dice."),
        },
        "limits": [
            (f"Trained on {len(train_slices)} slices of 8-bit display images (already windowed by the dataset "
             "authors), not on HU. On real HU CT the input is windowed -1100..100 HU and cropped to the lung box; "
             "that domain gap is not measured with labels (no HU lesion masks exist here)."),
            (f"Validation: {len(val_slices)} slices split by slice, no patient grouping; the numbers are a sanity "
             "check, not a performance claim."),
            ("2D, slice by slice; no pleural effusion, fibrosis or other-pneumonia class. On HU input the output is "
             "kept inside the lung mask."),
            "Research use only; not for clinical diagnosis.",
        ],
    }
    if result["epochs_run"] < config.epochs:
        card["training"]["config"]["stop_epoch"] = result["epochs_run"]
        card["training"]["stopped"] = (f"the run stopped after epoch {result['epochs_run']} of the {config.epochs}-epoch "
                                       f"cosine schedule at its {config.max_minutes:.0f}-minute limit; --stop-epoch "
                                       f"{result['epochs_run']} reproduces it")
    package = save_package(args.out, state, card)
    (package.path / "MODEL_CARD.md").write_text(render_model_card(package.card))
    size_mb = (package.path / "weights.safetensors").stat().st_size / 1e6
    log(f"\nexported {package.path} ({size_mb:.1f} MB weights, {n_params:,} parameters, card {CARD_NAME}); "
        f"training {result['seconds'] / 60:.1f} min, {result['epochs_run']} epochs; run dir {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
