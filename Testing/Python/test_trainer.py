"""The trainer on real COVID-CT images: finite decreasing loss, cancel, exact resume, export loads in the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from CovidCTScreenLib.errors import Cancelled
from CovidCTScreenLib.models.model_package import load_package
from CovidCTScreenLib.input.datasets import load_images
from CovidCTTrainingLib.data import COVID_CT_LABELS, covid_ct_split
from CovidCTTrainingLib.export import export_package
from CovidCTTrainingLib.trainer import TrainConfig, train

from conftest import COVID_CT

SIZE = 64  # small images keep the CPU test short; the path is the same as at 224


@pytest.fixture(scope="module")
def tiny_data():
    tr = covid_ct_split(COVID_CT, "train")
    va = covid_ct_split(COVID_CT, "val")
    tr = tr[:6] + tr[-6:]  # both classes
    va = va[:4] + va[-4:]
    return (load_images(tr, SIZE), np.array([i.label for i in tr]),
            load_images(va, SIZE), np.array([i.label for i in va]))


def _config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0, "seed": 3, "device": "cpu",
                          **kw})


def test_patient_level_splits():
    tr, va = covid_ct_split(COVID_CT, "train"), covid_ct_split(COVID_CT, "val")
    assert (len(tr), len(va)) == (425, 118)
    assert not {i.patient for i in tr} & {i.patient for i in va}
    assert len({i.patient for i in tr}) == 233  # 128 COVID + 105 NonCOVID patients (data README)


def test_train_cancel_resume_is_exact(tmp_path, tiny_data):
    torch.set_num_threads(1)
    full = train(*tiny_data, _config(), tmp_path / "full")
    losses = [h["train_loss"] for h in full.history]
    assert all(np.isfinite(losses)) and len(losses) == 2
    assert np.isfinite(full.val_logits).all() and full.val_logits.shape == (8, 2)

    done = []
    with pytest.raises(Cancelled):
        train(*tiny_data, _config(), tmp_path / "resumed", progress=done.append, cancel=lambda: len(done) >= 1)
    assert len(done) == 1 and (tmp_path / "resumed" / "checkpoint.pt").is_file()
    resumed = train(*tiny_data, _config(), tmp_path / "resumed")
    assert [h["train_loss"] for h in resumed.history] == losses
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    with pytest.raises(RuntimeError, match="another configuration"):
        train(*tiny_data, _config(lr=5e-4), tmp_path / "resumed")


def test_loss_decreases_on_fixed_batch(tiny_data):
    """Without augmentation noise, a few steps on one batch must lower the loss (the optimiser works)."""
    from CovidCTScreenLib.models.networks import build_network, load_imagenet_weights

    torch.manual_seed(0)
    net = build_network("efficientnet-lite0", 2)
    load_imagenet_weights(net, "efficientnet-lite0")
    x = torch.from_numpy(tiny_data[0])[:, None]
    y = torch.from_numpy(tiny_data[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_export_loads_and_scores(tmp_path, tiny_data):
    result = train(*tiny_data, TrainConfig(epochs=1, batch_size=4, warmup_epochs=0, device="cpu"), tmp_path / "w")
    pkg = export_package(result, tmp_path / "pkg", name="tiny", labels=COVID_CT_LABELS, positive_label="COVID",
                         val_labels=tiny_data[3], data={"train": "12 images", "val": "8 images"}, command="test")
    loaded = load_package(tmp_path / "pkg")
    assert loaded.card["weights_sha256"] == pkg.card["weights_sha256"]
    assert loaded.card["calibration"]["temperature"] > 0
    assert 0 <= loaded.card["operating_point"]["slice_threshold"] <= 1
    net = loaded.build("cpu")
    with torch.no_grad():
        out = net(torch.from_numpy(tiny_data[2])[:, None])
    assert np.allclose(out.numpy(), result.val_logits, atol=1e-4)
