"""Training from labelled HU volumes: slice targets, rendering cache, intensity augmentation, fine-tuning from a
package with frozen early blocks, covidct-train on a real volume (studies CSV), and the HU recipe's runs folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import COVID_CT, DICOM_SERIES, REPO

from CovidCTTrainingLib.augment import intensity_augment
from CovidCTTrainingLib.volumes import render_studies, slice_targets


def test_slice_targets():
    labels = np.array([-1, 0, 1, 1, -1])
    assert slice_targets("COVID-19", labels).tolist() == [1, 0, 1, 1, 1]  # study label where no slice label
    for other in ("other pneumonia", "normal", "non-COVID-19"):
        assert slice_targets(other, labels).tolist() == [0] * 5  # infected CAP slices are not COVID-19


def test_intensity_augment_is_seeded_and_stays_in_range():
    x = torch.rand(3, 1, 32, 32)
    a = intensity_augment(x, torch.Generator().manual_seed(1))
    b = intensity_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= 0 and a.max() <= 1


def test_fine_tune_from_package_keeps_frozen_blocks(tmp_path):
    from CovidCTScreenLib.input.datasets import load_images
    from CovidCTScreenLib.models.model_package import load_package
    from CovidCTTrainingLib.data import covid_ct_split
    from CovidCTTrainingLib.trainer import TrainConfig, train

    torch.set_num_threads(1)
    tr, va = covid_ct_split(COVID_CT, "train"), covid_ct_split(COVID_CT, "val")
    tr, va = tr[:4] + tr[-4:], va[:3] + va[-3:]
    data = (load_images(tr, 64), np.array([i.label for i in tr]), load_images(va, 64), np.array([i.label for i in va]))
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, warmup_epochs=0, device="cpu",
                         init_model="covidct-effnetlite0-v1", freeze_blocks=6, intensity_augment=True, select="last")
    result = train(*data, config, tmp_path / "w")
    start = load_package("covidct-effnetlite0-v1").build().state_dict()
    fixed = [k for k in start if k.startswith(("backbone._conv_stem", "backbone._bn0", "backbone._blocks.0.",
                                               "backbone._blocks.5."))]
    assert fixed and all(torch.equal(start[k], result.state_dict[k]) for k in fixed)  # weights and BN statistics
    assert not torch.equal(start["backbone._fc.weight"], result.state_dict["backbone._fc.weight"])
    assert not torch.equal(start["backbone._blocks.6._project_conv.weight"],
                           result.state_dict["backbone._blocks.6._project_conv.weight"])


def _covidct_train(*args):
    return subprocess.run([sys.executable, "-m", "CovidCTTrainingLib.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


@pytest.mark.slow
def test_covidct_train_on_a_labelled_volume(tmp_path):
    """A real DICOM volume listed in a studies CSV is rendered once into the cache and joins the training data."""
    (tmp_path / "studies.csv").write_text(f"study,label,patient_id\n{DICOM_SERIES},non-COVID-19,A0002\n")
    common = ["--covid-ct", COVID_CT, "--image-size", "32", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
              "--slice-cache", tmp_path / "cache"]
    out = _covidct_train(*common, "--volumes", tmp_path / "studies.csv", "--work", tmp_path / "w",
                         "--package", tmp_path / "pkg")
    assert out.returncode == 0, out.stderr
    assert "rendered A0002 (non-COVID-19): 27 lung slices of 30, 0 positive" in out.stderr
    assert "loaded 452 train" in out.stderr  # 425 COVID-CT train images + 27 lung slices
    card = json.loads((tmp_path / "pkg" / "model.json").read_text())
    assert card["training"]["hu_studies"][0].startswith("A0002 (non-COVID-19): 27 lung slices")
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    # from the cache alone (no SimpleITK needed), holding the one patient out leaves COVID-CT only
    out = _covidct_train(*common, "--rendered", tmp_path / "cache", "--hold-out", "A0002", "--work", tmp_path / "w2",
                         "--package", tmp_path / "pkg2")
    assert out.returncode == 0 and "loaded 425 train" in out.stderr, out.stderr
    out = _covidct_train(*common, "--rendered", tmp_path / "cache", "--hold-out", "P999", "--work", tmp_path / "w3",
                         "--package", tmp_path / "pkg3")
    assert out.returncode == 2 and "no such patient" in out.stderr


def test_hu_studies_reads_the_recipes_render_cache(tmp_path):
    """scripts/train_hu_model.py renders its HU volumes into RUNS/hu-slices; hu_studies (also read by
    scripts/hu_model_results.py) gives them back, with the single-slice folder absent."""
    from CovidCTScreenLib.input.volume_datasets import Study
    from CovidCTTrainingLib.hu_runs import VOLUME_SLICES, hu_studies

    render_studies([Study(DICOM_SERIES, "non-COVID-19", "A0002")], tmp_path / VOLUME_SLICES, log=lambda m: None)
    (study,) = hu_studies(tmp_path)
    assert study["patient"] == "A0002" and len(study["images"]) == 27 and not study["target"].any()
    assert hu_studies(tmp_path / "elsewhere") == []
