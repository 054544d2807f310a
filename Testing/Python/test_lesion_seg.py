"""Lesion segmentation: overlap metrics, the shipped UNet package (sha256, Dice on held-out Inf-Net slices,
geometry on real HU), and a tiny seeded training run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import COVID_HU, DATA

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.metrics import dice, iou

INFNET = DATA / "infnet-semiseg"


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
    from CovidCTScreenLib.lesion_seg import load_lesion_model

    return load_lesion_model()


def test_package_is_verified(model, tmp_path):
    from CovidCTScreenLib.lesion_seg import load_lesion_model

    card = model.package.card
    assert card["task"] == "lesion-segmentation" and card["labels"] == ["background", "ggo", "consolidation"]
    assert (model.package.path / "weights.safetensors").stat().st_size <= 25e6
    bad = tmp_path / "tampered"
    shutil.copytree(model.package.path, bad)
    with open(bad / "weights.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(InputError, match="sha256"):
        load_lesion_model(bad)


def test_held_out_dice_matches_card(model):
    """Recompute the card's validation Dice on the held-out Inf-Net slices (not seen in training)."""
    from CovidCTScreenLib.lesion_seg import predict_image
    from CovidCTTrainingLib.lesion_training import load_multiclass, segmentation_scores

    card = model.package.card
    val_names = card["validation"]["slices"]
    assert not set(val_names) & set(card["training"]["train_slices"])
    val = [s for s in load_multiclass(INFNET) if s.name in val_names]
    preds = [predict_image(model, s.image) for s in val]
    assert all(p.shape == s.mask.shape and p.dtype == np.uint8 for p, s in zip(preds, val))
    scores = segmentation_scores(preds, [s.mask for s in val])
    assert scores["lesion"]["dice_pooled"] > 0.5  # modest floor: 40 training slices
    assert scores["ggo"]["dice_pooled"] > 0.3
    rendered = (model.package.path / "MODEL_CARD.md").read_text()
    for name, m in scores.items():
        assert m["dice_pooled"] == pytest.approx(card["validation"]["scores"][name]["dice_pooled"], abs=0.01)
        assert f"| {name} | {card['validation']['scores'][name]['dice_pooled']:.3f} |" in rendered


def test_hu_prediction_keeps_ct_geometry(model):
    from CovidCTScreenLib.lesion_seg import predict_hu
    from CovidCTScreenLib.lung_mask import lung_mask
    from CovidCTScreenLib.volume_io import read_dicom_slice

    hu, spacing = read_dicom_slice(COVID_HU / "A002304_19010112-135.dcm")
    lungs = lung_mask(hu, spacing).lungs
    labels = predict_hu(model, hu, lungs)
    assert labels.shape == hu.shape and labels.dtype == np.uint8
    assert not labels[~lungs].any()
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    assert (labels > 0).sum() > 0.05 * lungs.sum()  # bilateral GGO on this slice (data README)
    np.testing.assert_array_equal(predict_hu(model, hu[0], lungs[0]), labels[0])  # 2D in, 2D out


def test_tiny_training_run_is_seeded(tmp_path):
    from CovidCTScreenLib.model_package import load_package, save_package
    from CovidCTTrainingLib.lesion_training import LesionConfig, load_multiclass, split_by_slice, train

    slices = load_multiclass(INFNET)
    assert len(slices) == 50
    tr, va = split_by_slice(slices, 10, 0)
    assert len(tr) == 40 and len(va) == 10 and not {s.name for s in tr} & {s.name for s in va}
    assert [s.name for s in split_by_slice(slices, 10, 0)[1]] == [s.name for s in va]
    cfg = LesionConfig(size=64, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, epochs=1, batch_size=4,
                       log_every=1)
    runs = [train(tr[:4], va[:2], cfg, log=lambda m: None) for _ in range(2)]
    assert runs[0]["history"][0]["loss"] == pytest.approx(runs[1]["history"][0]["loss"])
    card = {"name": "tiny", "task": "lesion-segmentation", "labels": ["background", "ggo", "consolidation"],
            "network": cfg.network_spec(), "input": {"size": 64}}
    save_package(tmp_path / "tiny", runs[0]["state_dict"], card)
    from CovidCTScreenLib.lesion_seg import load_lesion_model, predict_image

    m = load_lesion_model(tmp_path / "tiny")
    assert m.package.card["weights_sha256"] == load_package(tmp_path / "tiny").card["weights_sha256"]
    assert predict_image(m, va[0].image).shape == va[0].mask.shape


def test_training_path_is_free_of_simpleitk():
    code = ("import sys\n"
            "import CovidCTTrainingLib.lesion_training as t\n"
            "import monai.losses, monai.networks.nets, monai.transforms\n"
            "t._augmentation(64, 0)\n"
            "assert 'SimpleITK' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
