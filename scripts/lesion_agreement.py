"""HU bands vs the learned lesion UNet on the six real COVID-19 HU slices (no reference masks exist).

For each slice of ``covid-hu-slices``: lung mask (``lung_mask`` on the one-slice volume), HU-band extent
(``hu_bands``), UNet labels (``lesion_seg.predict_hu``) and possible fibrotic streaks (``fibrosis``). Both lesion
masks are compared inside the same measured lung (the HU-band module's eroded lung): GGO / consolidation %
by each method and the Dice between them. This is agreement between two estimates, not accuracy.

Writes docs/lesions_<subject>.png (image | HU bands | UNet | streak candidates) and docs/lesions_agreement.md.
Run: python scripts/lesion_agreement.py [--data ../shared/data] [--model covidct-lesion-unet-v1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from CovidCTScreenLib.lesions.fibrosis import LIMITS as STREAK_LIMITS  # noqa: E402
from CovidCTScreenLib.lesions.fibrosis import detect_streaks  # noqa: E402
from CovidCTScreenLib.lesions.hu_bands import hu_band_extent  # noqa: E402
from CovidCTScreenLib.lesions.lesion_seg import labels_at, load_lesion_model, predict_hu, predict_probabilities  # noqa: E402
from CovidCTScreenLib.lungs.lung_mask import lung_mask  # noqa: E402
from CovidCTScreenLib.evaluation.metrics import dice  # noqa: E402
from CovidCTScreenLib.input.preprocess import lung_box, prepare_hu_slice, window_hu  # noqa: E402
from CovidCTScreenLib.input.volume_io import read_dicom_slice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LESION_CMAP = ListedColormap([(0, 0, 0, 0), (1.0, 0.85, 0.0, 0.55), (1.0, 0.1, 0.1, 0.6)])  # GGO yellow, cons red


def _fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.2f}"


def _panel(ax, img, title, overlay=None, cmap=None, contour=None):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    if overlay is not None:
        ax.imshow(overlay, cmap=cmap, vmin=0, vmax=2 if cmap is LESION_CMAP else 1, interpolation="nearest")
    if contour is not None and contour.any():
        ax.contour(contour, [0.5], colors="deepskyblue", linewidths=0.6)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _percent_of(region: np.ndarray):
    n = int(region.sum())
    return lambda a: 100.0 * int((a & region).sum()) / n if n else float("nan")


def _body_crop_labels(model, hu2d: np.ndarray, body2d: np.ndarray, lungs2d: np.ndarray) -> np.ndarray:
    """UNet labels when the slice is framed like Inf-Net's images (cropped to the body, not the lung box):
    a sensitivity check of the learned extent to the framing, not the shipped inference path."""
    rows, cols = lung_box(body2d, 0.0)
    prob = predict_probabilities(model, prepare_hu_slice(hu2d, (rows, cols), model.size, model.window)[None])[0]
    out = np.zeros(hu2d.shape, np.uint8)
    out[rows, cols] = labels_at(prob, (rows.stop - rows.start, cols.stop - cols.start))
    return np.where(lungs2d, out, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default=None, help="lesion package name or folder (default: the shipped one)")
    args = ap.parse_args()
    model = load_lesion_model(args.model)
    rows = []
    for path in sorted((args.data / "covid-hu-slices").glob("*.dcm")):
        hu, spacing = read_dicom_slice(path)
        mask = lung_mask(hu, spacing)
        band = hu_band_extent(hu[0], mask.labels[0], spacing)
        net = predict_hu(model, hu[0], mask.lungs[0])
        streaks = detect_streaks(hu[0], mask.labels[0], spacing)
        measured = band.measured
        pct = _percent_of(measured)

        row = {"slice": path.stem.split("_")[0], "lung_cm2": mask.lungs[0].sum() * spacing[0] * spacing[1] / 100,
               "hu_ggo": pct(band.labels == 1), "hu_cons": pct(band.labels == 2),
               "net_ggo": pct(net == 1), "net_cons": pct(net == 2),
               "dice_lesion": dice((band.labels > 0) & measured, (net > 0) & measured),
               "dice_ggo": dice((band.labels == 1) & measured, (net == 1) & measured),
               "dice_cons": dice((band.labels == 2) & measured, (net == 2) & measured),
               "streaks": sum(r["count"] for r in streaks.per_slice),
               "net_body": pct(_body_crop_labels(model, hu[0], mask.body[0], mask.lungs[0]) > 0)}
        rows.append(row)

        box = lung_box(mask.lungs[0], 0.15) or (slice(None), slice(None))
        img = window_hu(hu[0])[box]
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
        _panel(axes[0], img, f"{row['slice']}: lung window, lung mask ({row['lung_cm2']:.0f} cm2)",
               contour=mask.lungs[0][box])
        _panel(axes[1], img, f"HU bands: GGO {row['hu_ggo']:.1f} % / cons {row['hu_cons']:.1f} %",
               np.where(band.labels[box] > 0, band.labels[box], 0), LESION_CMAP, contour=measured[box])
        _panel(axes[2], img, f"UNet: GGO {row['net_ggo']:.1f} % / cons {row['net_cons']:.1f} %  "
                             f"(Dice {_fmt(row['dice_lesion'])})", net[box], LESION_CMAP, contour=measured[box])
        _panel(axes[3], img, f"possible streaks (heuristic): {row['streaks']}",
               np.ma.masked_equal(streaks.mask[box].astype(float), 0), ListedColormap(["cyan"]),
               contour=mask.lungs[0][box])
        fig.suptitle("yellow GGO, red consolidation, blue outline = lung measured; research use only, not a diagnosis",
                     fontsize=8)
        fig.tight_layout()
        out = DOCS / f"lesions_{row['slice']}.png"
        fig.savefig(out, dpi=80)
        plt.close(fig)

    head = ("| slice | lung cm2 | HU GGO % | HU cons % | UNet GGO % | UNet cons % | Dice lesion | Dice GGO | "
            "Dice cons | streaks | UNet lesion % if body-cropped |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['slice']} | {r['lung_cm2']:.0f} | {r['hu_ggo']:.1f} | {r['hu_cons']:.1f} | "
                     f"{r['net_ggo']:.1f} | {r['net_cons']:.1f} | {_fmt(r['dice_lesion'])} | {_fmt(r['dice_ggo'])} | "
                     f"{_fmt(r['dice_cons'])} | {r['streaks']} | {r['net_body']:.1f} |")
    table = "\n".join(lines)
    print(table)
    (DOCS / "lesions_agreement.md").write_text(
        "# HU bands vs lesion UNet on six real COVID-19 HU slices\n\n"
        "Made by `python scripts/lesion_agreement.py` with model "
        f"`{model.package.name}` (sha256 {model.package.card['weights_sha256'][:12]}...). "
        "Percentages are of the measured lung (lung mask eroded by the HU-band rim); Dice compares the two "
        "methods' masks there. No reference masks exist for these slices: this is agreement, not accuracy.\n\n"
        f"{table}\n\n"
        "Last column: the UNet's lesion % when the slice is cropped to the body (as Inf-Net's training images are "
        "framed) instead of the lung box used by `lesion_seg.predict_hu`. The learned extent depends strongly on "
        "this framing, so it is not a stable measurement on HU input yet.\n\n"
        "Overlays: `docs/lesions_<slice>.png`. Streaks: " + STREAK_LIMITS + "\n")
    print(f"wrote {len(rows)} overlays docs/lesions_*.png and docs/lesions_agreement.md")


if __name__ == "__main__":
    main()
