"""Every training method on real images (64 px, a handful of slices, CPU): finite decreasing losses on a fixed
batch, the unlabelled path changes the weights, exact resume, an exported package scoring a real HU slice."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from CovidCTScreenLib.errors import Cancelled
from CovidCTScreenLib.models.inference import calibrated_probabilities, lung_slices
from CovidCTScreenLib.models.model_package import load_package
from CovidCTScreenLib.models.networks import HEADS, build_network
from CovidCTTrainingLib.cli import main
from CovidCTTrainingLib.data import COVID_CT_LABELS, covid_ct_split, load_images, load_unlabelled_images
from CovidCTTrainingLib.export import export_package
from CovidCTTrainingLib.losses import training_loss
from CovidCTTrainingLib.moco import MoCo
from CovidCTTrainingLib.trainer import class_weights, make_config, train

from conftest import COVID_CT, DATA, DICOM_SERIES, mini_covid_ct

SIZE = 64
UNLABELLED = DATA / "infnet-semiseg" / "unlabelled" / "images"
# Small architectures keep the multi-epoch runs short; the objectives are the same on any backbone.
RUNS = {"consistency": {"architecture": "crnet", "pretrained": False}, "ssresnet": {},
        "selftrans": {"architecture": "crnet", "pretrained": False, "pretrain_epochs": 2}}


@pytest.fixture(scope="module")
def data():
    tr, va = covid_ct_split(COVID_CT, "train"), covid_ct_split(COVID_CT, "val")
    tr, va = tr[:4] + tr[-4:], va[:3] + va[-3:]  # both classes
    return {"x": load_images(tr, SIZE), "y": np.array([i.label for i in tr]), "xv": load_images(va, SIZE),
            "yv": np.array([i.label for i in va]), "u": load_unlabelled_images(UNLABELLED, SIZE, limit=8),
            "val_patients": [i.patient for i in va]}


def _config(method, **kw):
    return make_config(method, **{"epochs": 2, "batch_size": 4, "unlabelled_batch_size": 4, "moco_batch_size": 4,
                                  "moco_queue": 8, "warmup_epochs": 0, "seed": 5, "device": "cpu", **kw})


def _train(data, config, workdir, **kw):
    torch.set_num_threads(1)
    return train(data["x"], data["y"], data["xv"], data["yv"], config, workdir, unlabelled_images=data["u"], **kw)


def _objective(method, data, architecture="efficientnet-lite0", **kw):
    config = _config(method, architecture=architecture, pretrained=architecture == "efficientnet-lite0", **kw)
    torch.manual_seed(0)
    net = build_network(config.architecture, 2)
    if method == "selftrans":
        return MoCo(net, HEADS[config.architecture], queue=config.moco_queue)
    return training_loss(config, net, net.get_submodule(HEADS[config.architecture]), class_weights(data["y"], 2))


@pytest.mark.parametrize("method", ["supervised", "consistency", "ssresnet", "selftrans", "crnet"])
def test_losses_finite_and_decrease_on_a_fixed_batch(method, data):
    torch.set_num_threads(1)
    arch = {"ssresnet": "ssresnet", "crnet": "crnet"}.get(method, "efficientnet-lite0")
    loss = _objective(method, data, arch)
    g = torch.Generator().manual_seed(0)
    inputs = loss.prepare(torch.from_numpy(data["x"])[:, None], torch.from_numpy(data["y"]),
                          torch.from_numpy(data["u"][:4])[:, None], g)
    queue = loss.queue.clone() if method == "selftrans" else None
    opt = torch.optim.Adam([p for p in loss.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for _ in range(6):
        if queue is not None:
            loss.queue.copy_(queue)  # the same negatives each step: a fixed objective
        out = loss(*inputs)
        assert all(torch.isfinite(v) for v in out.values()), out
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        totals.append(out["loss"].item())
    assert totals[-1] < totals[0], totals


@pytest.mark.parametrize("method", ["consistency", "ssresnet"])
def test_unlabelled_images_change_the_weights(method, data):
    """One step with the same labelled batch: lambda = 0 vs 0.3, and other unlabelled images, give other weights."""
    torch.set_num_threads(1)
    arch = "ssresnet" if method == "ssresnet" else "crnet"
    x, y = torch.from_numpy(data["x"][:4])[:, None], torch.from_numpy(data["y"][:4])

    def after_step(weight, u):
        loss = _objective(method, data, arch, consistency_weight=weight)
        opt = torch.optim.SGD(loss.parameters(), lr=0.1)
        loss(*loss.prepare(x, y, torch.from_numpy(u)[:, None], torch.Generator().manual_seed(0)))["loss"].backward()
        opt.step()
        return torch.cat([p.detach().flatten() for p in loss.net.parameters()])

    with_u = after_step(0.3, data["u"][:4])
    assert not torch.equal(with_u, after_step(0.0, data["u"][:4]))
    assert not torch.equal(with_u, after_step(0.3, data["u"][4:8]))


def test_moco_pretraining_moves_the_encoder_and_fills_the_queue(data):
    torch.set_num_threads(1)
    moco = _objective("selftrans", data, "crnet")
    before = copy.deepcopy(moco.net.state_dict())
    queue = moco.queue.clone()
    opt = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.015, momentum=0.9)
    u = torch.from_numpy(data["u"][:4])[:, None]
    moco(*moco.prepare(u, None, None, torch.Generator().manual_seed(0)))["loss"].backward()
    opt.step()
    assert any(not torch.equal(v, moco.net.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(queue[:, :4], moco.queue[:, :4]) and torch.equal(queue[:, 4:], moco.queue[:, 4:])
    net = moco.restore_head()
    assert net(u).shape == (4, 2)  # the classifier's own 2-class head is back


@pytest.mark.parametrize("method", list(RUNS))
def test_cancel_and_resume_equals_an_uninterrupted_run(method, data, tmp_path):
    config = _config(method, **RUNS[method])
    full = _train(data, config, tmp_path / "full")
    reports = []
    with pytest.raises(Cancelled):  # stop after the first epoch (of the first pre-training phase for selftrans)
        _train(data, config, tmp_path / "resumed", progress=reports.append, cancel=lambda: len(reports) >= 1)
    resumed = _train(data, config, tmp_path / "resumed")
    assert [h["losses"] for h in resumed.history] == [h["losses"] for h in full.history]
    assert all(np.isfinite(h["train_loss"]) for h in full.history)
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    assert np.array_equal(full.val_logits, resumed.val_logits)


@pytest.mark.parametrize("method", ["ssresnet", "selftrans"])
def test_exported_package_scores_a_real_hu_slice(method, data, tmp_path, dicom_ct, dicom_mask):
    config = _config(method, epochs=1, **{**RUNS[method], "pretrain_epochs": 1})
    result = _train(data, config, tmp_path / "work")
    export_package(result, tmp_path / "pkg", name=f"tiny-{method}", labels=COVID_CT_LABELS, positive_label="COVID",
                   val_labels=data["yv"], val_patients=data["val_patients"], command="test",
                   data={"train": "8 images", "val": "6 images", "unlabelled": [f"{UNLABELLED}: 8 images"]})
    package = load_package(tmp_path / "pkg")
    card = package.card
    assert card["training"]["method"] == method and card["training"]["unlabelled"]
    assert card["training"]["config"]["consistency_weight"] == config.consistency_weight
    assert card["architecture"] == config.architecture and card["input"]["spatial_shape"] == [SIZE, SIZE]
    assert card["calibration"]["temperature"] > 0 and 0 <= card["operating_point"]["slice_threshold"] <= 1
    assert 0 <= card["validation"]["at_0.5"]["auc"] <= 1
    slices = lung_slices(dicom_ct.hu, dicom_mask.lungs, dicom_ct.spacing, card["input"]["spatial_shape"][0])
    prob = calibrated_probabilities(package, package.build("cpu"), slices.images[::10], torch.device("cpu"))
    assert prob.shape == (len(slices.images[::10]), 2) and np.allclose(prob.sum(1), 1, atol=1e-5)


def test_cli_semi_supervised_run_with_image_folder_and_hu_volume(tmp_path):
    """covidct-train --method ssresnet reads unlabelled images and a DICOM series' lung slices into the card."""
    torch.set_num_threads(1)
    rc = main(["--covid-ct", str(mini_covid_ct(tmp_path / "covid-ct")), "--work", str(tmp_path / "work"),
               "--package", str(tmp_path / "pkg"), "--method", "ssresnet", "--epochs", "1", "--image-size", "32",
               "--batch-size", "4", "--unlabelled", str(UNLABELLED), "--unlabelled-limit", "4",
               "--unlabelled-volume", str(DICOM_SERIES), "--device", "cpu"])
    assert rc == 0
    card = load_package(tmp_path / "pkg").card
    assert card["training"]["method"] == "ssresnet" and card["architecture"] == "ssresnet"
    assert card["training"]["config"]["lr"] == 1e-3  # seed 001's method default
    unlabelled = card["training"]["unlabelled"]
    assert len(unlabelled) == 2 and "4 images" in unlabelled[0] and "lung slices" in unlabelled[1]
