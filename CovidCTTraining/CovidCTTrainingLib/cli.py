"""covidct-train: train a slice classifier on COVID-CT (or a class-per-folder set) and export a model package."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covidct-train", description=__doc__)
    p.add_argument("--covid-ct", type=Path, help="COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/)")
    p.add_argument("--work", type=Path, required=True, help="run folder (checkpoint; an interrupted run resumes here)")
    p.add_argument("--package", type=Path, required=True, help="model package folder to write")
    p.add_argument("--name", default=None, help="model name in the card (default: package folder name)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of ImageNet")
    p.add_argument("--cancel-file", type=Path, default=None,
                   help="stop between steps once this file exists (the GUI's Stop; portable where signals are not)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal

    from CovidCTScreenLib.errors import Cancelled, InputError

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C

    try:
        import numpy as np
        from tqdm import tqdm

        from CovidCTScreenLib.datasets import load_images

        from .data import COVID_CT_LABELS, covid_ct_split, covid_ct_summary
        from .export import export_package
        from .trainer import TrainConfig, train

        if args.covid_ct is None:
            raise InputError("give the labelled data with --covid-ct DIR")
        train_items, val_items = covid_ct_split(args.covid_ct, "train"), covid_ct_split(args.covid_ct, "val")
        overlap = {i.patient for i in train_items} & {i.patient for i in val_items}
        if overlap:
            raise InputError(f"patients in both train and val: {sorted(overlap)[:5]}")
        t0 = time.perf_counter()
        x_tr, x_va = load_images(train_items), load_images(val_items)
        y_tr = np.array([i.label for i in train_items])
        y_va = np.array([i.label for i in val_items])
        print(f"loaded {len(x_tr)} train / {len(x_va)} val images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             device=args.device, pretrained=not args.no_pretrained)
        bar = tqdm(total=config.epochs, unit="epoch", desc="training")

        def progress(rep):
            bar.update(rep.epoch - bar.n)
            bar.set_postfix(loss=f"{rep.train_loss:.3f}", val_auc=f"{rep.val['auc']:.3f}",
                            best=f"{rep.best_auc:.3f}@{rep.best_epoch}", s=f"{rep.seconds:.0f}")

        def cancel() -> bool:
            return args.cancel_file is not None and args.cancel_file.exists()

        result = train(x_tr, y_tr, x_va, y_va, config, args.work, progress=progress, cancel=cancel)
        bar.close()
        data = covid_ct_summary(train_items, val_items)
        pkg = export_package(result, args.package, name=args.name or args.package.name, labels=COVID_CT_LABELS,
                             positive_label="COVID", val_labels=y_va, data=data,
                             val_patients=[i.patient for i in val_items],
                             command="covidct-train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
        v = pkg.card["validation"]["at_0.5"]
        print(f"exported {pkg.path}: val AUC {v['auc']:.3f}, F1 {v['f1']:.3f}, accuracy {v['accuracy']:.3f} "
              f"(best epoch {result.best_epoch})")
        return 0
    except (KeyboardInterrupt, Cancelled):
        print("covidct-train: cancelled; run the same command again to resume from the last epoch", file=sys.stderr)
        return 130
    except (InputError, RuntimeError) as e:
        print(f"covidct-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
