"""covidct-train: train a slice classifier (COVID-19 vs non-COVID-19) with one of the seed papers' methods and
export a model package.

Labelled data: COVID-CT's official train split (--covid-ct; its val split selects and calibrates), further slice
image sets (--images), and labelled CT volumes in HU (--volumes: a COVID-CT-MD folder or a studies CSV
``study,label[,patient_id][,slice_labels]``). Volumes are rendered once, as screening renders them, into a cache of
slice arrays (--slice-cache); --rendered trains from such a cache alone (no SimpleITK / pydicom needed). A slice
of a COVID-19 study is positive where its slice label says infected (every slice when it has no slice labels);
slices of other studies are negative. Methods: supervised | consistency | ssresnet | selftrans | crnet (see
CovidCTTrainingLib.methods). Semi- and self-supervised methods also read unlabelled slices: image folders
(--unlabelled) and the lung slices of HU CT volumes (--unlabelled-volume). Several processes (GPUs or machines):
torchrun --nproc_per_node=N -m CovidCTTrainingLib.cli ...
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from .methods import METHODS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidct-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--covid-ct", type=Path, help="COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/)")
    p.add_argument("--work", type=Path, required=True, help="run folder (checkpoint; an interrupted run resumes here)")
    p.add_argument("--package", type=Path, required=True, help="model package folder to write")
    p.add_argument("--name", default=None, help="model name in the card (default: package folder name)")
    p.add_argument("--method", default="supervised", choices=METHODS)
    p.add_argument("--architecture", default=None,
                   help="efficientnet-lite0 (default), resnet18/50, densenet121/169, crnet, ssresnet")
    p.add_argument("--images", type=Path, action="append", default=[],
                   help="labelled slice images (repeatable): a folder with COVID/NonCOVID sub-folders or a CSV "
                        "path,label[,patient_id]")
    p.add_argument("--volumes", type=Path, action="append", default=[],
                   help="labelled CT volumes in HU (repeatable): a COVID-CT-MD folder or a studies CSV")
    p.add_argument("--slice-cache", type=Path, default=None,
                   help="folder of the rendered volume slices (default: <work>/hu-slices)")
    p.add_argument("--rendered", type=Path, action="append", default=[],
                   help="folder of rendered volume slices (.npz) to train on as they are (repeatable)")
    p.add_argument("--hold-out", action="append", default=[], metavar="PATIENT",
                   help="leave this patient's volumes out of training (repeatable; leave-one-patient-out)")
    p.add_argument("--init-model", default=None,
                   help="fine-tune from this model package (folder or shipped name) instead of ImageNet")
    p.add_argument("--freeze-blocks", type=int, default=None,
                   help="EfficientNet-Lite0: keep the stem and the first N of 16 blocks fixed")
    p.add_argument("--intensity-augment", action="store_true",
                   help="random window/level, gamma, blur, noise and JPEG on every training image")
    p.add_argument("--select", choices=["best", "last"], default=None,
                   help="keep the epoch with the best COVID-CT val AUC (default) or the last epoch")
    p.add_argument("--hflip-tta", action="store_true", help="the package scores each slice and its mirror")
    p.add_argument("--unlabelled", type=Path, action="append", default=[],
                   help="folder of unlabelled slice images (repeatable), e.g. infnet-semiseg/unlabelled/images")
    p.add_argument("--unlabelled-limit", type=int, default=None, help="use at most this many images per folder")
    p.add_argument("--unlabelled-volume", type=Path, action="append", default=[],
                   help="CT volume in HU (DICOM folder, NIfTI, NRRD; repeatable): its lung slices are unlabelled data")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default 224)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--pretrain-epochs", type=int, default=None, help="selftrans: MoCo epochs of each pre-training")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--moco-batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate (the body's when --head-lr is given)")
    p.add_argument("--head-lr", type=float, default=None, help="learning rate of the final layer (seed 002: 5e-4)")
    p.add_argument("--consistency-weight", type=float, default=None, help="lambda of consistency / ssresnet")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of ImageNet")
    p.add_argument("--cancel-file", type=Path, default=None,
                   help="stop between steps once this file exists (the GUI's Stop; portable where signals are not)")
    p.add_argument("--progress-lines", action="store_true",
                   help="progress as PROGRESS / STATUS / DONE lines on stdout (CovidCTScreenLib.app.process_runner) "
                        "instead of a progress bar")
    return p


def labelled_images(source: Path, labels: list[str]):
    """Items of a labelled slice-image set: class sub-folders or a ``path,label[,patient_id]`` CSV."""
    from CovidCTScreenLib.input.datasets import csv_items, folder_items

    return folder_items(source, labels) if source.is_dir() else csv_items(source, labels)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal

    from CovidCTScreenLib.errors import Cancelled, InputError

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C

    try:
        import numpy as np
        from tqdm import tqdm

        from CovidCTScreenLib.input.datasets import load_images
        from CovidCTScreenLib.input.preprocess import INPUT_SIZE

        from . import distributed
        from .data import (COVID_CT_LABELS, covid_ct_split, covid_ct_summary, describe_studies,
                           load_unlabelled_images, rendered_slices)
        from .export import export_package
        from .trainer import make_config, train

        distributed.init_from_environment()
        main_rank = distributed.rank_and_size()[0] == 0
        if args.covid_ct is None:
            raise InputError("give the labelled data with --covid-ct DIR")
        config = make_config(args.method, architecture=args.architecture, epochs=args.epochs,
                             pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size,
                             moco_batch_size=args.moco_batch_size, lr=args.lr, head_lr=args.head_lr,
                             consistency_weight=args.consistency_weight, seed=args.seed, device=args.device,
                             pretrained=False if args.no_pretrained else None,
                             init_model=str(args.init_model) if args.init_model else None,
                             freeze_blocks=args.freeze_blocks, intensity_augment=args.intensity_augment or None,
                             select=args.select)
        size = args.image_size or INPUT_SIZE
        train_items, val_items = covid_ct_split(args.covid_ct, "train"), covid_ct_split(args.covid_ct, "val")
        overlap = {i.patient for i in train_items} & {i.patient for i in val_items}
        if overlap:
            raise InputError(f"patients in both train and val: {sorted(overlap)[:5]}")
        t0 = time.perf_counter()
        image_sets = [(src, labelled_images(src, COVID_CT_LABELS)) for src in args.images]
        image_items = [item for _, items in image_sets for item in items]
        x_tr, x_va = load_images(train_items + image_items, size), load_images(val_items, size)
        y_tr = np.array([i.label for i in train_items + image_items])
        y_va = np.array([i.label for i in val_items])
        files = [f for folder in args.rendered for f in sorted(folder.glob("*.npz")) if not f.name.endswith(".tmp.npz")]
        if args.volumes:
            from CovidCTScreenLib.input.volume_datasets import read_studies

            from .volumes import render_studies  # needs SimpleITK unless every study is rendered already

            studies = [s for src in args.volumes for s in read_studies(src)]
            files += render_studies(studies, args.slice_cache or args.work / "hu-slices", size,
                                    log=lambda m: print(m, file=sys.stderr))
        hu = rendered_slices(files)
        unknown = set(args.hold_out) - {s["patient"] for s in hu}
        if unknown:
            raise InputError(f"--hold-out {', '.join(sorted(unknown))}: no such patient among the volumes")
        hu_train = [s for s in hu if s["patient"] not in args.hold_out]
        if any(s["images"].shape[-1] != size for s in hu_train):
            raise InputError(f"rendered slices are not {size} px; render them again at this --image-size")
        if hu_train:
            x_tr = np.concatenate([x_tr, *(s["images"] for s in hu_train)])
            y_tr = np.concatenate([y_tr, *(s["target"] for s in hu_train)])
        unlabelled, sources = [], []
        for folder in args.unlabelled:
            unlabelled.append(load_unlabelled_images(folder, size, args.unlabelled_limit))
            sources.append(f"{folder}: {len(unlabelled[-1])} images (8-bit)")
        if args.unlabelled_volume:
            from .volumes import volume_lung_slices  # needs SimpleITK

            slices, notes = volume_lung_slices(args.unlabelled_volume, size)
            unlabelled.append(slices)
            sources += notes
        x_un = np.concatenate(unlabelled) if unlabelled else None
        if main_rank:
            print(f"loaded {len(x_tr)} train / {len(x_va)} val / {0 if x_un is None else len(x_un)} unlabelled "
                  f"images at {size} px in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        bar = None

        def progress(rep):
            nonlocal bar
            if not main_rank:
                return
            if args.progress_lines:
                from CovidCTScreenLib.app.process_runner import format_progress, format_status

                status = {"phase": rep.phase, "epoch": rep.epoch, "epochs": rep.epochs,
                          "loss": round(rep.train_loss, 4), "seconds": round(rep.seconds, 1)}
                if rep.val:
                    status |= {"val_auc": rep.val["auc"], "best_auc": rep.best_auc, "best_epoch": rep.best_epoch}
                print(format_progress(rep.phase, rep.epoch / rep.epochs), flush=True)
                print(format_status(status), flush=True)
                return
            if bar is None or bar.desc != rep.phase:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=rep.epochs, unit="epoch", desc=rep.phase)
            bar.update(rep.epoch - bar.n)
            post = {"loss": f"{rep.train_loss:.3f}"}
            if rep.val:
                post |= {"val_auc": f"{rep.val['auc']:.3f}", "best": f"{rep.best_auc:.3f}@{rep.best_epoch}"}
            bar.set_postfix(**post, s=f"{rep.seconds:.0f}")

        def cancel() -> bool:
            return args.cancel_file is not None and args.cancel_file.exists()

        result = train(x_tr, y_tr, x_va, y_va, config, args.work, progress=progress, cancel=cancel,
                       unlabelled_images=x_un)
        if bar is not None:
            bar.close()
        if not main_rank:
            return 0
        data = covid_ct_summary(train_items, val_items) | {"unlabelled": sources if config.method in (
            "consistency", "ssresnet", "selftrans") else []}
        if image_sets:
            data["images"] = [f"{src}: {len(items)} images ({sum(i.label for i in items)} COVID), "
                              f"{len({i.patient for i in items})} patients" for src, items in image_sets]
        if hu:
            data["hu_studies"] = describe_studies(hu_train)
            data["hu_held_out"] = sorted(args.hold_out)
        pkg = export_package(result, args.package, name=args.name or args.package.name, labels=COVID_CT_LABELS,
                             positive_label="COVID", val_labels=y_va, data=data,
                             val_patients=[i.patient for i in val_items], hflip_tta=args.hflip_tta,
                             command="covidct-train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
        v = pkg.card["validation"]["at_0.5"]
        print(f"exported {pkg.path}: val AUC {v['auc']:.3f}, F1 {v['f1']:.3f}, accuracy {v['accuracy']:.3f} "
              f"(best epoch {result.best_epoch})")
        if args.progress_lines:
            from CovidCTScreenLib.app.process_runner import format_status

            print(format_status({"final": {"auc": v["auc"], "f1": v["f1"], "accuracy": v["accuracy"],
                                           "best_epoch": result.best_epoch}}))
            print(f"DONE {pkg.path}", flush=True)
        return 0
    except (KeyboardInterrupt, Cancelled):
        print("covidct-train: cancelled; run the same command again to resume from the last epoch", file=sys.stderr)
        return 130
    except (InputError, RuntimeError, ValueError) as e:
        print(f"covidct-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
