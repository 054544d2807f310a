"""CovidCTTrainingLogic (GUI and console) driving the real covidct-train process on a tiny real COVID-CT subset.

As in test_slicer_logic.py, the Slicer application classes, qt and ctk are minimal stand-ins; the
training process, its tqdm progress, the export and the model package check are real.
"""

from __future__ import annotations

import types

import pytest

from conftest import COVID_CT, REPO, load_slicer_module, mini_covid_ct


class _Settings:
    store: dict = {}

    def value(self, key):
        return self.store.get(key)

    def setValue(self, key, value):
        self.store[key] = value


@pytest.fixture
def module(monkeypatch):
    qt = types.ModuleType("qt")
    qt.QSettings = _Settings
    _Settings.store = {}
    return load_slicer_module(monkeypatch, REPO / "CovidCTTraining" / "CovidCTTraining.py", qt=qt)


def test_refuses_what_does_not_exist(module, tmp_path):
    logic = module.CovidCTTrainingLogic()
    with pytest.raises(ValueError, match="not a COVID-CT folder"):
        logic.train(tmp_path, tmp_path / "pkg")
    with pytest.raises(ValueError, match="Unknown training method"):
        logic.train(COVID_CT, tmp_path / "pkg", method="semi-supervised")
    cmd = logic.command(COVID_CT, tmp_path / "pkg", epochs=3, learningRate=1e-4, batchSize=8, device="cpu",
                        method="consistency", unlabelledFolder=tmp_path / "unlabelled")
    assert cmd[1:3] == ["-m", "CovidCTTrainingLib.cli"]
    assert cmd[cmd.index("--method") + 1] == "consistency"
    assert cmd[cmd.index("--unlabelled") + 1] == str(tmp_path / "unlabelled")
    assert cmd[cmd.index("--work") + 1] == str(tmp_path / "pkg-work")
    assert cmd[cmd.index("--lr") + 1] == "0.0001" and cmd[cmd.index("--epochs") + 1] == "3"


@pytest.mark.slow
def test_one_epoch_run_exports_and_registers_the_model(module, tmp_path):
    data = mini_covid_ct(tmp_path / "covid-ct")
    logic = module.CovidCTTrainingLogic()
    states = []
    result = logic.train(data, tmp_path / "pkg", epochs=2, batchSize=4, device="cpu",
                         progressCallback=lambda s: states.append(s))
    assert (tmp_path / "pkg" / "model.json").is_file() and (tmp_path / "pkg-work" / "checkpoint.pt").is_file()
    assert states and states[-1]["epoch"] == states[-1]["epochs"] == 2 and "val_auc" in states[-1]
    assert result["final"] is not None and 0.0 <= result["final"]["auc"] <= 1.0
    assert result["card"]["validation"]["at_0.5"]["auc"] == pytest.approx(result["final"]["auc"], abs=1e-3)
    # offered in COVID CT Screen's model list (shared settings key)
    assert _Settings.store[module.USER_MODELS_KEY] == [str((tmp_path / "pkg").resolve())]
    assert "Validation data: COVID-CT official val split" in module.model_package.card_html(result["card"])


def test_evaluate_section_runs_covidct_evaluate(module, tmp_path):
    """The Evaluate section's logic: the real worker measures the shipped model on a small real class folder."""
    from conftest import DATA, mini_class_folder

    data = mini_class_folder(tmp_path / "set", 3)
    logic = module.CovidCTTrainingLogic()
    events = []
    result = logic.evaluate(data, tmp_path / "res", device="cpu", thresholds=(0.5,),
                            progressCallback=lambda stage, fraction: events.append(fraction))
    assert set(result["plots"]) == {"roc", "confusion", "reliability"}
    assert all(open(p, "rb").read(4) == b"\x89PNG" for p in result["plots"].values())
    assert result["metrics"]["data"]["items"] == 6 and events[-1] == 1.0 and not logic.isEvaluating
    with pytest.raises(ValueError, match="does not exist"):
        logic.evaluate(tmp_path / "missing", tmp_path / "r2")
    with pytest.raises(RuntimeError, match="Input refused: .*lesion-segmentation model"):
        logic.evaluate(DATA / "infnet-semiseg" / "multiclass", tmp_path / "r3", device="cpu")
    assert not (tmp_path / "r3").exists()
