"""Lesion segmentation: overlap metrics, the shipped EfficientNet-Lite0 UNet package (sha256, card CV figures,
Dice on a labelled Inf-Net slice, geometry on real HU), the thorax framing, and a tiny seeded training run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import COVID_HU, DATA

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.evaluation.metrics import dice, iou

INFNET = DATA / "infnet-semiseg"
HU_SLICE = COVID_HU / "A002304_19010112-135.dcm"  # bilateral GGO (data README)


def test_dice_iou_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 px
    b[0, 2:4] = True  # 2 px, both inside a
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert iou(a, b) == pytest.approx(2 / 4)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert np.isnan(dice(np.zeros(3), np.zeros(3))) and np.isnan(iou(np.zeros(3), np.zeros(3)))
    with pytest.raises(ValueError):
        dice(a, b[:2])


@pytest.fixture(scope="module")
def model():
    from CovidCTScreenLib.lesions.lesion_seg import load_lesion_model

    return load_lesion_model("covidct-lesion-effunet-v2")


@pytest.fixture(scope="module")
def hu_slice():
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import read_dicom_slice

    hu, spacing = read_dicom_slice(HU_SLICE)
    return hu, lung_mask(hu, spacing).lungs


def test_v2_package_is_verified(model, tmp_path):
    from CovidCTScreenLib.lesions.lesion_seg import EFFNET_UNET, load_lesion_model

    card = model.package.card
    assert card["name"] == "covidct-lesion-effunet-v2" and card["network"]["architecture"] == EFFNET_UNET
    assert card["task"] == "lesion-segmentation" and card["labels"] == ["background", "ggo", "consolidation"]
    assert card["input"]["framing"] == "thorax"
    assert (model.package.path / "weights.safetensors").stat().st_size <= 25e6
    bad = tmp_path / "tampered"
    shutil.copytree(model.package.path, bad)
    with open(bad / "weights.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(InputError, match="sha256"):
        load_lesion_model(bad)


@pytest.mark.parametrize("architecture", ["efficientnet-lite0-unet", "efficientnet-lite2-unet"])
def test_efficientnet_unet_skips_one_feature_per_scale(architecture):
    """The decoder takes the last block of each of the encoder's 5 scales (1/2 ... 1/32) and returns full size."""
    import torch
    from CovidCTScreenLib.lesions.lesion_seg import build_lesion_network

    net = build_lesion_network({"architecture": architecture, "decoder_channels": [96, 48, 32, 24, 16]}).eval()
    x = torch.rand(1, 1, 96, 96)
    with torch.inference_mode():
        sizes = [f.shape[-1] for f in net.features(x)]
        assert sizes == [48, 24, 12, 6, 3]
        assert net(x).shape == (1, 3, 96, 96)


def test_card_cv_figures_are_consistent(model):
    """The card's CV summary agrees with its own per-slice and per-fold Dice; folds partition the 50 slices."""
    card = model.package.card
    folds = card["training"]["folds"]
    names = [n for f in folds for n in f]
    assert len(names) == len(set(names)) == 50
    cv = card["cross_validation"]
    assert card["training"]["chosen"] in cv
    rendered = (model.package.path / "MODEL_CARD.md").read_text()
    for variant in ("supervised", "semi-supervised"):
        for name in ("ggo", "consolidation", "lesion"):
            m = cv[variant][name]
            per_slice = np.array([np.nan if d is None else d for d in m["per_slice_dice"]], float)
            assert len(per_slice) == 50
            assert np.nanmean(per_slice) == pytest.approx(m["dice_mean_per_slice"], abs=1e-3)
            assert np.mean(m["dice_per_fold"]) == pytest.approx(m["dice_fold_mean"], abs=1e-3)
            for point, ci in ((m["dice_pooled"], m["dice_pooled_ci95_slices"]),
                              (m["dice_fold_mean"], m["dice_fold_mean_ci95"]),
                              (m["dice_mean_per_slice"], m["dice_mean_per_slice_ci95"])):
                assert ci[0] <= point <= ci[1]
            assert f"| {variant} | {name} | **{m['dice_fold_mean']:.3f}** (" in rendered
    chosen = cv[card["training"]["chosen"]]
    assert card["validation"]["scores"]["ggo"]["dice_pooled"] == chosen["ggo"]["dice_pooled"]


def test_labelled_infnet_slice_reaches_a_sane_dice(model):
    """A labelled Inf-Net slice (in the final model's training set): sane overlap, labels at the image size."""
    from CovidCTScreenLib.lesions.lesion_seg import predict_image
    from CovidCTTrainingLib.lesion_training import load_multiclass, segmentation_scores

    s = next(s for s in load_multiclass(INFNET) if s.name == "3")
    pred = predict_image(model, s.image)
    assert pred.shape == s.mask.shape and pred.dtype == np.uint8
    scores = segmentation_scores([pred], [s.mask])
    assert scores["lesion"]["dice_pooled"] > 0.6 and scores["ggo"]["dice_pooled"] > 0.4


def test_hu_prediction_keeps_ct_geometry(model, hu_slice):
    from CovidCTScreenLib.lesions.lesion_seg import predict_hu

    hu, lungs = hu_slice
    labels = predict_hu(model, hu, lungs)
    assert labels.shape == hu.shape and labels.dtype == np.uint8
    assert not labels[~lungs].any()
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    assert (labels > 0).sum() > 0.05 * lungs.sum()  # bilateral GGO on this slice (data README)
    np.testing.assert_array_equal(predict_hu(model, hu[0], lungs[0]), labels[0])  # 2D in, 2D out


def test_thorax_framing(model, hu_slice):
    """HU slices are framed as Inf-Net's: one lung box (+ THORAX_MARGIN) for the whole volume, so the output does
    not depend on the field of view (padding the CT with air and table changes nothing) nor on the slice's own
    lung size (a small lung slice of the same volume keeps the volume's scale)."""
    from CovidCTScreenLib.lesions.lesion_seg import THORAX_MARGIN, predict_hu, slice_boxes, thorax_box
    from CovidCTScreenLib.input.preprocess import lung_box

    hu, lungs = hu_slice
    labels = predict_hu(model, hu, lungs)
    pad = ((0, 0), (40, 60), (70, 30))
    padded = predict_hu(model, np.pad(hu, pad, constant_values=-1000.0), np.pad(lungs, pad))
    np.testing.assert_array_equal(padded[:, 40:-60, 70:-30], labels)

    small = np.zeros_like(lungs[0])
    rows, cols = lung_box(lungs[0], 0.0)
    small[rows.start + 20:rows.start + 60, cols.start + 20:cols.start + 60] = True  # an apex-like small lung slice
    volume_lungs = np.stack([lungs[0], small])
    boxes = slice_boxes(model, volume_lungs)
    assert boxes[0] == boxes[1] == thorax_box(volume_lungs) == lung_box(lungs[0], THORAX_MARGIN)
    assert 0.0 < THORAX_MARGIN < 0.08  # Inf-Net's lungs nearly fill the frame (scripts/lesion_hu_check.py --framing)


def test_tiny_training_run_is_seeded(tmp_path):
    from CovidCTScreenLib.models.model_package import load_package, save_package
    from CovidCTTrainingLib.lesion_training import (LesionConfig, kfold_by_slice, load_multiclass, prepare_image,
                                                    pseudo_labels, resize_mask, train)

    slices = load_multiclass(INFNET)
    assert len(slices) == 50
    folds = kfold_by_slice(50, 5, 0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(50))
    assert all(np.array_equal(a, b) for a, b in zip(folds, kfold_by_slice(50, 5, 0)))
    cfg = LesionConfig(size=64, pretrained=False, epochs=1, batch_size=2, student_epochs=1)
    images = np.stack([prepare_image(s.image, 64) for s in slices[:4]])
    masks = np.stack([resize_mask(s.mask, 64) for s in slices[:4]])
    runs = [train(images, masks, cfg, log=lambda m: None) for _ in range(2)]
    assert runs[0]["history"][0]["loss"] == pytest.approx(runs[1]["history"][0]["loss"])
    pseudo = pseudo_labels(runs[0]["net"], images[:2], 0.5)
    assert pseudo.shape == (2, 64, 64) and set(np.unique(pseudo).tolist()) <= {0, 1, 2, 255}
    student = train(images, masks, cfg, pseudo=(images[:2], pseudo), init_state=runs[0]["state_dict"],
                    log=lambda m: None)
    mean_teacher = [train(images, masks, cfg, unlabelled=images[::-1], init_state=runs[0]["state_dict"],
                          log=lambda m: None) for _ in range(2)]
    assert mean_teacher[0]["history"][0]["loss"] == pytest.approx(mean_teacher[1]["history"][0]["loss"])
    assert mean_teacher[0]["history"][0]["loss"] != pytest.approx(student["history"][0]["loss"])
    card = {"name": "tiny", "task": "lesion-segmentation", "labels": ["background", "ggo", "consolidation"],
            "network": cfg.network_spec(), "input": {"size": 64, "framing": "thorax"}}
    save_package(tmp_path / "tiny", student["state_dict"], card)
    from CovidCTScreenLib.lesions.lesion_seg import load_lesion_model, predict_image

    m = load_lesion_model(tmp_path / "tiny")
    assert m.package.card["weights_sha256"] == load_package(tmp_path / "tiny").card["weights_sha256"]
    assert predict_image(m, slices[5].image).shape == slices[5].mask.shape


def test_training_path_is_free_of_simpleitk():
    code = ("import sys\n"
            "import CovidCTTrainingLib.lesion_training as t\n"
            "import monai.losses, monai.networks.nets, monai.transforms\n"
            "t._augmentation(64, 0)\n"
            "assert 'SimpleITK' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_card_cv_fold_recomputes(model):
    """Retrain the first CV fold's teacher from the card's configuration (1.5-4 min on one CPU thread): its
    held-out Dice gives back the card's figure for that fold."""
    from CovidCTTrainingLib.lesion_training import (LesionConfig, kfold_by_slice, load_multiclass, predict_labels,
                                                    prepare_image, resize_mask, segmentation_scores, train)

    card = model.package.card
    cfg = dict(card["training"]["config"])
    config = LesionConfig(**{**cfg, **{k: tuple(cfg[k]) for k in ("channels", "strides", "decoder_channels")}})
    slices = load_multiclass(INFNET)
    held = kfold_by_slice(len(slices), config.folds, config.seed)[0]
    assert [slices[i].name for i in held] == card["training"]["folds"][0]
    idx = np.setdiff1d(np.arange(len(slices)), held)
    # the training script caches prepared images as float16
    images = np.stack([prepare_image(slices[i].image, config.size) for i in idx]).astype(np.float16).astype(np.float32)
    masks = np.stack([resize_mask(slices[i].mask, config.size) for i in idx])
    net = train(images, masks, config, log=lambda m: None)["net"]
    scores = segmentation_scores(predict_labels(net, [slices[i].image for i in held], config.size),
                                 [slices[i].mask for i in held])
    for name in ("ggo", "consolidation", "lesion"):
        expected = card["cross_validation"]["teacher"][name]["dice_per_fold"][0]
        assert scores[name]["dice_pooled"] == pytest.approx(expected, abs=0.02)
