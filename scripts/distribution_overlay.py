"""Picture of the distribution zones on a real CT: docs/distribution_zones.png.

Coronal view: each lung's upper / middle / lower zone (thirds of its own cranio-caudal extent) in three tints with
the lead lesion map (lesion UNet) on top; axial views: the peripheral part (outer third of the distance from the
lung border) against the central part, with the lesions. Default volume: COVID-CT-MD P002 (COVID-19).
Usage: python scripts/distribution_overlay.py [--ct DIR_OR_FILE] [--out docs/distribution_zones.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ct", type=Path,
                   default=REPO.parent / "shared" / "data" / "covid-ct-md" / "COVID-19 subjects" / "P002")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "distribution_zones.png")
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from CovidCTScreenLib.lesions.distribution import SIDES, distribution, peripheral_region, zone_of_slices
    from CovidCTScreenLib.lesions.hu_bands import hu_band_extent
    from CovidCTScreenLib.lesions.lesion_seg import load_lesion_model, predict_hu
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.preprocess import window_hu
    from CovidCTScreenLib.input.volume_io import load_ct

    vol = load_ct(args.ct)
    mask = lung_mask(vol.hu, vol.spacing)
    lesions = predict_hu(load_lesion_model(None, "cpu"), vol.hu, mask)
    measured = hu_band_extent(vol.hu, mask.labels, vol.spacing).measured
    d = distribution(lesions, mask.labels, vol.spacing, measured)
    zones = np.full(mask.labels.shape, -1, np.int8)  # 0 upper, 1 middle, 2 lower
    for s in SIDES:
        per_slice = zone_of_slices((mask.labels == s).reshape(len(mask.labels), -1).any(axis=1))
        zones[mask.labels == s] = np.broadcast_to(per_slice[:, None, None], mask.labels.shape)[mask.labels == s]
    tint = np.array([[0.3, 0.5, 1.0, 0.35], [1.0, 0.85, 0.2, 0.35], [0.6, 0.3, 0.9, 0.35]])
    lesion_rgba = np.array([[0, 0, 0, 0], [0.1, 0.9, 0.1, 0.7], [0.95, 0.1, 0.1, 0.8]])

    rows = np.flatnonzero(mask.lungs.any(axis=(0, 2)))
    y = int(rows[len(rows) * 2 // 3])  # a coronal plane in the posterior third of the lungs (dependent, basal)
    lung_slices = np.flatnonzero(mask.lungs.any(axis=(1, 2)))
    ks = [int(lung_slices[len(lung_slices) * f // 6]) for f in (1, 3, 5)]  # one axial slice per zone
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.6), dpi=80, gridspec_kw={"width_ratios": [1.3, 1, 1, 1]})
    ax = axes[0]
    aspect = vol.spacing[2] / vol.spacing[0]
    ax.imshow(window_hu(vol.hu[:, y])[::-1], cmap="gray", vmin=0, vmax=1, aspect=aspect)
    z = zones[:, y][::-1]
    ax.imshow(np.where(z[..., None] >= 0, tint[np.maximum(z, 0)], 0), aspect=aspect)
    ax.imshow(lesion_rgba[lesions[:, y][::-1]], aspect=aspect)
    ax.set_title("coronal (posterior third): zones upper blue / middle yellow / lower purple", fontsize=9)
    for ax, k in zip(axes[1:], ks):
        rim = np.zeros(mask.labels[k].shape, bool)
        for s in SIDES:
            if (mask.labels[k] == s).any():
                rim |= peripheral_region(mask.labels[k] == s, (vol.spacing[1], vol.spacing[0]))
        ax.imshow(window_hu(vol.hu[k]), cmap="gray", vmin=0, vmax=1)
        ax.imshow(np.where(rim[..., None], [1.0, 0.6, 0.0, 0.3], [0.2, 0.6, 1.0, 0.3]) * mask.lungs[k][..., None])
        ax.imshow(lesion_rgba[lesions[k]])
        ax.set_title(f"slice {k} ({['upper', 'middle', 'lower'][zones[k][mask.lungs[k]].max()]} zone): "
                     "peripheral orange, central blue", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
        ax.text(0.01, 0.01, "R", color="w", transform=ax.transAxes)
        ax.text(0.97, 0.01, "L", color="w", transform=ax.transAxes)
    score = d["severity_score"]["total"]
    fig.suptitle(f"{args.ct.name}: lesion UNet GGO green, consolidation red. Bilateral {d['bilateral']}, peripheral "
                 f"predominant {d['peripheral_predominant']} ({d['peripheral_vs_central_pct'][0]:.1f} % vs "
                 f"{d['peripheral_vs_central_pct'][1]:.1f} %), lower-zone predominant {d['lower_zone_predominant']}, "
                 f"severity {score}/30. Zones are not lobes. Research use only.", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
