"""COVID CT Screen: 3D Slicer module (thin GUI over CovidCTScreenLib). Research use only.

Data flow: input CT node -> NRRD in a temp folder -> ``CovidCTScreenLib.app.worker`` in a separate
PythonSlicer process (lung mask, slice scores, Grad-CAM, verdict, report folder) -> result nodes
made by ``CovidCTScreenLib.slicer_glue.mrml``. Heavy packages (torch, monai, ...) are imported only by the worker.
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
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from CovidCTScreenLib import RESEARCH_USE_NOTICE, __version__
from CovidCTScreenLib.app import options, process_runner, worker
from CovidCTScreenLib.lesions import lesion_seg
from CovidCTScreenLib.models import model_package
from CovidCTScreenLib.slicer_glue.requirements import missing_requirements
from CovidCTScreenLib.slicer_glue.texts import category_html, manifestations_html, model_card_html

# Source tree and installed extension have the same layout: <root>/CovidCTScreen.py beside
# <root>/CovidCTScreenLib/, and the shared resources in <root>/../Resources (see CMakeLists.txt).
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
SAMPLE_NAME = "Lung_Dx-A0002_chestCT.nrrd"
SAMPLE_SHA256 = "a6a1238b45936e0cbd1092844019cd98043c2de411467093aac04bb8bccecf03"
USER_MODELS_KEY = "CovidCTScreen/UserModels"  # QSettings: model package folders added by the user or trained
TORCH_REQUIREMENT = ">=2.2"
DEVICES = list(options.DEVICES)
SCREEN_OPTION_DEFAULTS = options.SCREEN_OPTION_DEFAULTS
ATTR_DICOM_FOLDER = "CovidCTScreen.DicomFolder"  # a node loaded from a DICOM folder is screened from its files
ATTR_SERIES_UID = "CovidCTScreen.SeriesInstanceUID"


def resourcePath(relative: str) -> str:
    return str(RESOURCES / relative)


#
# CovidCTScreen
#


class CovidCTScreen(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "COVID CT Screen"
        self.parent.categories = ["Chest"]
        self.parent.dependencies = []
        self.parent.contributors = ["CovidCTScreen contributors (research prototype)"]
        self.parent.helpText = f"""
<p>Screens an axial chest CT for a COVID-19 pattern (version {__version__}). <b>{RESEARCH_USE_NOTICE}</b></p>
<p><b>Method.</b> A 3D lung mask is made from Hounsfield units (right and left lung, airways removed). Every axial
slice holding enough lung is cropped to the lungs, mapped through the lung window stored in the model card
(W1200/L-500) and scored by a 2D classifier; scores are calibrated (temperature scaling). The study is called COVID-19 when more than a set fraction
of lung slices reach the slice threshold. Grad-CAM shows where the classifier looked on each slice.</p>
{model_card_html()}
<p>Outputs: lung segmentation (SNOMED CT coded), heatmap volume shown over the CT, a per-slice table (lesion %
of each slice's lung by the lesion UNet and the HU bands, and the classifier's P(COVID-19)) with a lesion chart and
a score chart, top suspicious slices (click to jump), and a report folder (JSON, CSV, NRRD, PNG) with "Export report".
The same pipeline runs from the Python console (<code>CovidCTScreenLogic().process(volumeNode)</code>), the
command line (<code>covidct-screen</code>) and headless Slicer (<code>scripts/batch_screen.py</code>).</p>
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer, MONAI, PyTorch, SimpleITK and EfficientNet-Lite. Models trained on the public COVID-CT
dataset (Zhao et al., 2020). Sample CT: Lung-PET-CT-Dx collection, The Cancer Imaging Archive (TCIA), CC BY 3.0.
"""
        iconPath = resourcePath("Icons/CovidCTScreen.png")
        if os.path.isfile(iconPath):
            self.parent.icon = qt.QIcon(iconPath)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The shipped sample chest CT in the Sample Data module (local file, checked by SHA256)."""
    import SampleData

    sample = RESOURCES / "SampleData" / SAMPLE_NAME
    if not sample.is_file():
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="COVID CT Screen",
        sampleName="CovidCTScreenChestCT",
        thumbnailFileName=resourcePath("Icons/CovidCTScreenSample.png"),
        uris=sample.resolve().as_uri(),
        fileNames=SAMPLE_NAME,
        checksums=f"SHA256:{SAMPLE_SHA256}",
        nodeNames="ChestCT_LungDx_A0002",
    )


#
# Parameter node
#


@parameterNodeWrapper
class CovidCTScreenParameterNode:
    """
    inputVolume - the chest CT to screen (never modified).
    lungMask - optional lung segmentation the user has, used instead of the computed lung mask.
    model - shipped model name or model package folder.
    device - auto (CUDA when available), cuda or cpu.
    overrideThreshold / sliceThreshold - recompute the verdict with another slice threshold than the model's.
    heatmapOpacity - foreground opacity of the heatmap over the CT.
    computeHeatmap - run Grad-CAM (slower; off gives scores only).
    computeLesions - measure GGO / consolidation extent and fibrotic streak candidates.
    lesionModel - lesion segmentation model (shipped name or folder) of that step (--lesion-model).
    model, device, computeHeatmap and computeLesions default to CovidCTScreenLib.app.options (the CLI's options).
    output* - nodes to fill (created on Apply when empty).
    reportFolder - the report folder of the last run.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    lungMask: vtkMRMLSegmentationNode
    model: str = model_package.DEFAULT_MODEL
    device: Annotated[str, Choice(DEVICES)] = SCREEN_OPTION_DEFAULTS["device"]
    overrideThreshold: bool = False
    sliceThreshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    computeHeatmap: bool = SCREEN_OPTION_DEFAULTS["heatmap"]
    computeLesions: bool = SCREEN_OPTION_DEFAULTS["lesions"]
    lesionModel: str = lesion_seg.DEFAULT_LESION_MODEL
    outputSegmentation: vtkMRMLSegmentationNode
    outputHeatmap: vtkMRMLScalarVolumeNode
    outputTable: vtkMRMLTableNode
    outputChart: vtkMRMLPlotChartNode
    outputLesionChart: vtkMRMLPlotChartNode
    reportFolder: str = ""


#
# Widget
#


class CovidCTScreenWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._plotViewConnected = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(resourcePath("UI/CovidCTScreen.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CovidCTScreenLogic()

        self.ui.noticeLabel.text = RESEARCH_USE_NOTICE
        self.populateModels()
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.lesionModelComboBox.connect("currentIndexChanged(int)", self.onLesionModelChanged)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.ui.dicomFolderPathLineEdit.connect("currentPathChanged(QString)", self.onDicomFolderChanged)
        self.ui.loadSeriesButton.connect("clicked(bool)", self.onLoadSeries)
        self.ui.topSlicesListWidget.connect("itemClicked(QListWidgetItem*)", self.onTopSliceClicked)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None and self.logic.isRunning:
            self.logic.cancel()
        if self.logic is not None:
            self.logic.removeWorkFolder()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.populateModels()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.GetAttribute("CovidCTScreen.Role"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._selectModel(self._parameterNode.model)
            _selectInCombo(self.ui.lesionModelComboBox, self._parameterNode.lesionModel)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._checkCanApply()
        p = self._parameterNode
        self.ui.sliceThresholdSliderWidget.enabled = p.overrideThreshold
        self.ui.lesionModelComboBox.enabled = p.computeLesions
        self.ui.exportReportButton.enabled = bool(p.reportFolder) and os.path.isdir(p.reportFolder)
        if self.logic.lastResult is not None:
            mrmlGlue().set_heatmap_opacity(p.heatmapOpacity)
            self.showVerdict()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self.logic.isRunning:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.toolTip = "Stop the running screening; nothing is added to the scene"
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.text = "Apply"
            self.ui.applyButton.toolTip = "Screen the selected CT (runs in the background)"
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = "Apply"
            self.ui.applyButton.toolTip = "Select an input CT volume"
            self.ui.applyButton.enabled = False

    # -- models

    def populateModels(self) -> None:
        p = self._parameterNode
        _fillCombo(self.ui.modelComboBox, self.logic.availableModels())
        self._selectModel(p.model if p else model_package.DEFAULT_MODEL)
        _fillCombo(self.ui.lesionModelComboBox, self.logic.availableLesionModels())
        _selectInCombo(self.ui.lesionModelComboBox, p.lesionModel if p else lesion_seg.DEFAULT_LESION_MODEL)

    def _selectModel(self, ref: str) -> None:
        _selectInCombo(self.ui.modelComboBox, ref)
        self.ui.modelInfoLabel.text = model_card_html(self.ui.modelComboBox.currentData or model_package.DEFAULT_MODEL)

    def onLesionModelChanged(self, index: int) -> None:
        ref = self.ui.lesionModelComboBox.itemData(index)
        if self._parameterNode and ref:
            self._parameterNode.lesionModel = ref

    def onModelChanged(self, index: int) -> None:
        ref = self.ui.modelComboBox.itemData(index)
        if self._parameterNode and ref:
            self._parameterNode.model = ref
        self.ui.modelInfoLabel.text = model_card_html(ref or model_package.DEFAULT_MODEL)

    def onAddModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Model package folder (model.json + weights)")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Not a usable model package.", waitCursor=True):
            self.logic.addUserModel(folder)
            self.populateModels()
            self._selectModel(folder)
            self._parameterNode.model = folder

    # -- run

    def onApplyButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        with slicer.util.tryWithErrorDisplay("Failed to start screening.", waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            p = self._parameterNode
            self.clearResultsDisplay()
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.statusLabel.text = "Starting..."
            self.logic.process(p.inputVolume, model=p.model, device=p.device, waitForCompletion=False,
                               heatmap=p.computeHeatmap, lesions=p.computeLesions, heatmapOpacity=p.heatmapOpacity,
                               lesionModel=p.lesionModel,
                               lungSegmentation=p.lungMask,
                               outputNodes={"segmentation": p.outputSegmentation, "heatmap": p.outputHeatmap,
                                            "table": p.outputTable, "chart": p.outputChart,
                                            "lesion_chart": p.outputLesionChart},
                               progressCallback=self.onProgress, completedCallback=self.onCompleted)
        self._checkCanApply()

    def onProgress(self, stage: str, fraction: float) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = f"{stage}..."

    def onCompleted(self, result, error) -> None:
        self.ui.progressBar.hide()
        self._checkCanApply()
        if error:
            self.ui.statusLabel.text = error.splitlines()[0]
            if not error.startswith("Cancelled"):
                slicer.util.errorDisplay(f"Screening failed: {error}", windowTitle="COVID CT Screen")
            return
        p = self._parameterNode
        p.outputSegmentation = result["segmentation"]
        if result["heatmap"] is not None:
            p.outputHeatmap = result["heatmap"]
        p.outputTable = result["table"]
        p.outputChart = result["chart"]
        if result["lesion_chart"] is not None:
            p.outputLesionChart = result["lesion_chart"]
        p.reportFolder = result["reportFolder"]
        self.ui.statusLabel.text = f"Done in {result['seconds']:.0f} s on {result['report'].get('device', '?')}."
        self.showVerdict()
        self.showResultsInLayout(result)

    # -- results

    def clearResultsDisplay(self) -> None:
        self.ui.verdictLabel.text = ""
        self.ui.probabilitiesLabel.text = ""
        self.ui.extentLabel.text = ""
        self.ui.topSlicesListWidget.clear()

    def showVerdict(self) -> None:
        result = self.logic.lastResult
        if result is None:
            return
        p = self._parameterNode
        verdict = self.logic.verdict(result, p.sliceThreshold if p.overrideThreshold else None)
        colour = "#b22222" if verdict["positive"] else "#2e7d32"
        override = " (threshold override)" if p.overrideThreshold else ""
        self.ui.verdictLabel.text = (
            category_html(verdict)
            + f"Slice model (binary): <span style='color:{colour}'><b>{verdict['label']}</b></span>{override}<br>"
            f"{verdict['positive_slices']} of {verdict['lung_slices']} lung slices "
            f"({verdict['positive_fraction']:.0%}) "
            f"reach P &ge; {verdict['slice_threshold']:.2f}; rule: more than {verdict['min_fraction']:.0%}."
            + (f"<br><b style='color:#b8860b'>{verdict['confidence_note']}</b>" if verdict.get("low_confidence")
               else ""))
        probs = result["report"].get("slice_probability_summary", {})
        self.ui.probabilitiesLabel.text = (
            f"Slice P(COVID-19): max {probs.get('max', 0):.2f}, mean {probs.get('mean', 0):.2f}, "
            f"mean of top 5 {probs.get('mean_top5', 0):.2f}. Lung volume "
            f"{result['report'].get('lungs', {}).get('volume_ml', {}).get('total', 0) / 1000:.2f} L."
            + manifestations_html(result["report"].get("manifestations", {})))
        from CovidCTScreenLib.report.report_html import extent_html

        self.ui.extentLabel.text = extent_html(result["report"])  # the same tables as report.html
        self.ui.topSlicesListWidget.clear()
        for key in result["report"].get("key_slices", []):
            lesions = (f"lesions {key['lesion_pct']:.1f} % ({key.get('lesion_method', '')}), "
                       if key.get("lesion_pct") is not None else "")
            item = qt.QListWidgetItem(f"{key.get('name', key['slice'])} {key.get('zone', '')}: "
                                      f"{lesions}classifier P(COVID-19) {key['probability']:.2f}")
            item.setData(qt.Qt.UserRole, int(key["slice"]))
            self.ui.topSlicesListWidget.addItem(item)

    def showResultsInLayout(self, result) -> None:
        glue = mrmlGlue()
        p = self._parameterNode
        if result["heatmap"] is not None:
            glue.show_heatmap(p.inputVolume, result["heatmap"], p.heatmapOpacity)
        result["segmentation"].SetDisplayVisibility(True)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotView)
        # the lesion % per slice when measured (it tracks the radiologists' labels on HU CT; the classifier's
        # P(COVID-19) does not, docs/ct_md_evaluation.md); the score chart stays one click away in the plot view
        slicer.modules.plots.logic().ShowChartInLayout(result["lesion_chart"] or result["chart"])
        plotWidget = layoutManager.plotWidget(0)
        if plotWidget is not None and self._plotViewConnected is not plotWidget:
            plotWidget.plotView().connect("dataSelected(vtkStringArray*, vtkCollection*)", self.onPlotDataSelected)
            self._plotViewConnected = plotWidget
        if result["report"].get("key_slices"):
            self.jumpToSlice(result["report"]["key_slices"][0]["slice"])

    def jumpToSlice(self, k: int) -> None:
        result = self.logic.lastResult
        if result is None:
            return
        spacing, origin, direction, shape = result["geometry"]
        glue = mrmlGlue()
        ras = glue.slice_center_ras(spacing, origin, direction, shape, int(k))
        glue.jump_slices_to(ras)

    def onTopSliceClicked(self, item) -> None:
        self.jumpToSlice(item.data(qt.Qt.UserRole))

    def onPlotDataSelected(self, mrmlPlotDataIDs, selectionCol) -> None:
        result = self.logic.lastResult
        if result is None:
            return
        for i in range(mrmlPlotDataIDs.GetNumberOfValues()):
            if mrmlPlotDataIDs.GetValue(i) not in [s.GetID() for s in [result["series"], *result["lesion_series"]]]:
                continue
            points = selectionCol.GetItemAsObject(i)
            if points is not None and points.GetNumberOfTuples() > 0:
                self.jumpToSlice(int(result["slice_indices"][int(points.GetValue(0))]))
                return

    def onExportReport(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Export the report into this (empty) folder")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Failed to export the report.", waitCursor=True):
            p = self._parameterNode
            target = self.logic.exportReport(p.reportFolder, Path(folder) / self._exportName(),
                                             p.sliceThreshold if p.overrideThreshold else None)
            self.ui.statusLabel.text = f"Report exported to {target}"
            if (target / "report.html").is_file():
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(target / "report.html")))

    # -- DICOM folders (PACS exports with several series)

    def onDicomFolderChanged(self, folder: str) -> None:
        combo = self.ui.dicomSeriesComboBox
        combo.clear()
        if not folder or not os.path.isdir(folder):
            return
        with slicer.util.tryWithErrorDisplay("Cannot list the DICOM series of this folder.", waitCursor=True):
            for uid, text, best in self.logic.listSeries(folder):
                combo.addItem(("* " if best else "") + text, uid)
                if best:
                    combo.setCurrentIndex(combo.count - 1)

    def onLoadSeries(self) -> None:
        folder, uid = self.ui.dicomFolderPathLineEdit.currentPath, self.ui.dicomSeriesComboBox.currentData
        if not folder or not uid:
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the DICOM series.", waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadSeries(folder, uid)

    def _exportName(self) -> str:
        name = self._parameterNode.inputVolume.GetName() if self._parameterNode.inputVolume else "study"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + "_covidct_report"


def _fillCombo(combo, items) -> None:
    """Replace a combo box's (label, reference) items without firing its change signal."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for label, ref in items:
        combo.addItem(label, ref)
    combo.blockSignals(wasBlocked)


def _selectInCombo(combo, ref: str) -> None:
    """Select the item holding ``ref`` (a folder not listed yet is added) without firing the change signal."""
    index = combo.findData(ref)
    if index < 0 and ref:
        combo.addItem(f"{Path(ref).name} (folder)", ref)
        index = combo.count - 1
    wasBlocked = combo.blockSignals(True)
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(wasBlocked)


def mrmlGlue():
    """CovidCTScreenLib.slicer_glue.mrml, imported when first needed (it pulls in SimpleITK lazily)."""
    from CovidCTScreenLib.slicer_glue import mrml

    return mrml


#
# Logic
#


class CovidCTScreenLogic(ScriptedLoadableModuleLogic):
    """Screening logic, usable without the GUI:

        logic = slicer.util.getModuleLogic("CovidCTScreen")  # or CovidCTScreenLogic()
        result = logic.process(slicer.util.getNode("CT"))      # blocks; returns nodes and report
        result["report"]["verdict"]["label"], result["segmentation"], result["heatmap"], result["table"]
    """

    def __init__(self, runner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner or process_runner.start  # tests pass a fake with the same signature
        self.lastResult = None
        self._workDir = None
        self._run = None
        self._dependenciesChecked = False

    def getParameterNode(self):
        return CovidCTScreenParameterNode(super().getParameterNode())

    @property
    def isRunning(self) -> bool:
        return self._run is not None

    # -- DICOM folders

    def listSeries(self, folder) -> list:
        """[(series UID, one-line description, chosen by volume_io.SERIES_RULE)] of a DICOM folder."""
        from CovidCTScreenLib.input.volume_io import choose_series, list_series

        series = list_series(folder)
        best = choose_series(series) if series else None
        return [(s.uid, s.line(), s is best) for s in series]

    def loadSeries(self, folder, seriesUID):
        """Load one series of a DICOM folder as a CT node. Screening that node reads the DICOM files themselves,
        so the report names slices by instance number and adds DICOM SEG and SR."""
        from CovidCTScreenLib.input.volume_io import load_ct

        volume = load_ct(folder, series_uid=seriesUID)
        node = mrmlGlue().ct_volume_to_node(volume, volume.meta.get("series_description") or "CT")
        node.SetAttribute(ATTR_DICOM_FOLDER, str(folder))
        node.SetAttribute(ATTR_SERIES_UID, str(seriesUID))
        return node

    # -- models

    def userModels(self) -> list:
        value = qt.QSettings().value(USER_MODELS_KEY) or []
        paths = [value] if isinstance(value, str) else list(value)
        return [p for p in paths if (Path(p) / model_package.CARD_NAME).is_file()]

    def addUserModel(self, folder) -> str:
        """Remember a model package folder (checked: card, weights, sha256) so it is offered in the model list."""
        package = model_package.load_package(folder)
        folder = str(Path(package.path).resolve())
        paths = [p for p in self.userModels() if p != folder] + [folder]
        qt.QSettings().setValue(USER_MODELS_KEY, paths)
        return folder

    def availableModels(self) -> list:
        """[(label, reference)]: shipped models (by name) then the user's model folders (by path)."""
        models = [(f"{name} (shipped)" if name == model_package.DEFAULT_MODEL else name, name)
                  for name in model_package.available_models(task=model_package.SLICE_CLASSIFICATION)]
        models += [(f"{Path(p).name} ({p})", p) for p in self.userModels()]
        return models or [(f"{model_package.DEFAULT_MODEL} (missing)", model_package.DEFAULT_MODEL)]

    def availableLesionModels(self) -> list:
        """[(label, name)]: the shipped lesion segmentation models (model card task), the default marked."""
        names = model_package.available_models(task=model_package.LESION_SEGMENTATION)
        return ([(f"{n} (default)" if n == lesion_seg.DEFAULT_LESION_MODEL else n, n) for n in names]
                or [(f"{lesion_seg.DEFAULT_LESION_MODEL} (missing)", lesion_seg.DEFAULT_LESION_MODEL)])

    # -- dependencies

    def ensureDependencies(self, askConfirmation: bool = True, requirementsFile: str | None = None) -> bool:
        """torch through the PyTorch extension, the rest from Resources/requirements.txt; once per session."""
        if self._dependenciesChecked:
            return True
        try:
            import torch  # noqa: F401
        except ImportError:
            try:
                import PyTorchUtils
            except ImportError as e:
                raise RuntimeError("COVID CT Screen needs the 'PyTorch' extension: install it from the Extensions "
                                   "Manager, restart Slicer and press Apply again.") from e
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                if torchLogic.installTorch(askConfirmation=askConfirmation,
                                           torchVersionRequirement=TORCH_REQUIREMENT) is None:
                    raise RuntimeError("PyTorch is required. Install it in the PyTorch Utils module (choose the "
                                       "CPU or the CUDA build matching your GPU driver), then press Apply again.")
        requirements = requirementsFile or resourcePath("requirements.txt")
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):  # Slicer >= 5.12
            packaging.pip_ensure(packaging.load_requirements(requirements), requester="COVID CT Screen")
        else:
            missing = missing_requirements(requirements)
            if missing:
                if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                        "COVID CT Screen will download and install these Python packages:\n\n"
                        + "\n".join(missing) + "\n\nThis can take several minutes.", "Install Python packages"):
                    return False
                slicer.util.pip_install(missing)
        still = missing_requirements(requirements)
        if still:
            raise RuntimeError("These Python packages are still missing or too old: " + ", ".join(still)
                               + ". Install them in the Python console with slicer.util.pip_install(...) "
                               "and restart Slicer.")
        self._dependenciesChecked = True
        return True

    # -- processing

    def process(self, inputVolumeNode, model=None, device="auto", waitForCompletion=True, heatmap=True,
                heatmapOpacity=0.4, outputNodes=None, progressCallback=None, completedCallback=None, lesions=True,
                batchSize=None, lungSegmentation=None, lesionModel=None):
        """Screen ``inputVolumeNode`` (never modified); ``lungSegmentation``: an optional segmentation node with
        lung segments used as the lung mask; ``lesionModel``: the lesion model (name or folder; None: default). With ``waitForCompletion`` (console, batch, tests) it
        blocks and returns {"report", "segmentation", "heatmap", "table", "chart", "reportFolder", ...} or
        raises; otherwise it returns None at once and calls ``completedCallback(result, error)`` later."""
        import tempfile

        if self.isRunning:
            raise RuntimeError("A screening is already running; cancel it first")
        glue = mrmlGlue()
        from CovidCTScreenLib.input.volume_io import validate_ct

        volume = glue.ct_volume_from_node(inputVolumeNode)  # refuses label maps, vector and empty volumes
        validate_ct(volume)  # the same refusals as files: no HU, not a chest CT, too few slices
        del volume
        self.removeWorkFolder()  # the previous run's report folder: its nodes are loaded, a new run replaces it
        workDir = Path(tempfile.mkdtemp(prefix="CovidCTScreen-", dir=slicer.app.temporaryPath
                                        if hasattr(slicer, "app") else None))
        dicomFolder, series = inputVolumeNode.GetAttribute(ATTR_DICOM_FOLDER), inputVolumeNode.GetAttribute(
            ATTR_SERIES_UID)
        if dicomFolder and os.path.isdir(dicomFolder):  # loaded by loadSeries: screen the DICOM files themselves
            inputFile = Path(dicomFolder)
        else:
            inputFile, series = glue.write_volume_file(inputVolumeNode, workDir / "input.nrrd"), None
        maskFile = (glue.write_lung_mask_file(lungSegmentation, inputVolumeNode, workDir / "lung_mask.nrrd")
                    if lungSegmentation is not None else None)
        outDir = workDir / "report"
        cancelFile = workDir / "cancel"
        maskName = lungSegmentation.GetName() if lungSegmentation is not None else None
        cmd = worker.command(inputFile, outDir, model=model, device=device, heatmap=heatmap, lesions=lesions,
                             batch_size=batchSize, cancel_file=cancelFile, python=process_runner.python_executable(),
                             lung_mask=maskFile, lung_mask_name=maskName, series=series, lesion_model=lesionModel)
        env = worker.environment()
        prefix = inputVolumeNode.GetName()
        started = _now()

        def finish(code, message):
            self._run = None
            if inputFile.parent == workDir:  # the temporary NRRD, never the user's DICOM folder
                inputFile.unlink(missing_ok=True)
            if maskFile is not None:
                maskFile.unlink(missing_ok=True)
            if code != worker.EXIT_OK:
                shutil.rmtree(workDir, ignore_errors=True)
                kind = {worker.EXIT_CANCELLED: "Cancelled", worker.EXIT_INPUT: "Input refused"}.get(code, "Failed")
                return None, f"{kind}: {message}"
            nodes = outputNodes or {}
            loaded = glue.load_report_folder(outDir, inputVolumeNode, prefix, heatmap_opacity=heatmapOpacity,
                                             segmentation_node=nodes.get("segmentation"),
                                             heatmap_volume_node=nodes.get("heatmap"),
                                             table_node=nodes.get("table"), chart_node=nodes.get("chart"),
                                             lesion_chart_node=nodes.get("lesion_chart"))
            loaded["reportFolder"] = str(outDir)
            self._workDir = workDir  # kept for Export report until the next run or removeWorkFolder()
            loaded["seconds"] = _now() - started
            self.lastResult = loaded
            return loaded, None

        def progress(stage, fraction):
            if progressCallback:
                progressCallback(stage, fraction)
            if waitForCompletion and hasattr(slicer, "app"):  # a blocking run keeps the GUI painted
                slicer.app.processEvents()

        job = self.runner(cmd, env, cancelFile, process_runner.Callbacks(progress=progress))
        if waitForCompletion:
            self._run = job
            try:
                code, message = job.wait()
            finally:
                self._run = None
            result, error = finish(code, message)
            if error:
                raise RuntimeError(error)
            return result

        def onFinished():
            try:
                result, error = finish(job.result, job.message)
            except Exception as e:  # loading the nodes failed: nothing was added (mrml is all-or-nothing)
                logging.exception("loading CovidCTScreen results failed")
                result, error = None, f"Failed: {e}"
            if completedCallback:
                completedCallback(result, error)

        self._run = job
        self._timer = process_runner.poll_with_qt_timer(job, onFinished)
        return None

    def cancel(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def removeWorkFolder(self) -> None:
        """Delete the temporary folder of the last successful run (the widget calls it on cleanup)."""
        if self._workDir is not None:
            shutil.rmtree(self._workDir, ignore_errors=True)
            self._workDir = None

    def verdict(self, result, sliceThreshold=None) -> dict:
        """The report's verdict, or the verdict recomputed with another slice threshold (display only)."""
        verdict = dict(result["report"]["verdict"])
        if sliceThreshold is None or abs(sliceThreshold - verdict["slice_threshold"]) < 1e-9:
            return verdict
        from CovidCTScreenLib.screening.verdict import study_verdict

        pos = result["probabilities"][:, result["positive_index"]]
        binary = study_verdict(result["slice_indices"], pos, sliceThreshold, verdict["min_fraction"]).to_dict()
        report = result["report"]
        if verdict.get("category") and "zones" in report.get("distribution", {}):
            from CovidCTScreenLib.screening.verdict import category_from_report

            binary.update(category_from_report(binary, report["manifestations"], report["distribution"]))
        return binary

    def exportReport(self, reportFolder, target, sliceThreshold=None) -> Path:
        """Copy the report folder to ``target`` (must not exist); with a threshold override, add
        verdict_override.json saying so (report.json keeps the model's own verdict)."""
        target = Path(target)
        if not reportFolder or not Path(reportFolder, "report.json").is_file():
            raise RuntimeError("No report to export: run the screening first")
        if target.exists():
            raise RuntimeError(f"{target} already exists; choose another folder")
        shutil.copytree(reportFolder, target)
        if sliceThreshold is not None and self.lastResult is not None:
            override = self.verdict(self.lastResult, sliceThreshold)
            override["note"] = ("Verdict recomputed in Slicer with a user-chosen slice threshold; report.json "
                                "holds the model's validated operating point. " + RESEARCH_USE_NOTICE)
            (target / "verdict_override.json").write_text(json.dumps(override, indent=2) + "\n")
        return target


def _now() -> float:
    import time

    return time.perf_counter()


#
# Self-test (runs in Slicer: Reload and Test, or ctest via slicer_add_python_unittest)
#


class CovidCTScreenTest(ScriptedLoadableModuleTest):
    """Mirrors Testing/Python/test_mrml.py, test_worker.py and test_slicer_modules.py inside a real Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ui_names()
        self.setUp()
        self.test_volume_geometry_roundtrip()
        self.setUp()
        self.test_bad_input_refused_without_nodes()
        self.setUp()
        self.test_process_sample_ct()

    def loadSample(self):
        node = slicer.util.loadVolume(str(RESOURCES / "SampleData" / SAMPLE_NAME))
        self.assertIsNotNone(node)
        return node

    def test_ui_names(self):
        import xml.etree.ElementTree as ET

        names = {w.get("name") for w in ET.parse(resourcePath("UI/CovidCTScreen.ui")).iter("widget")}
        for name in ("inputSelector", "applyButton", "progressBar", "topSlicesListWidget", "exportReportButton",
                     "heatmapOpacitySliderWidget", "modelComboBox", "deviceComboBox", "dicomFolderPathLineEdit",
                     "dicomSeriesComboBox", "loadSeriesButton", "extentLabel"):
            self.assertIn(name, names)

    def test_volume_geometry_roundtrip(self):
        """Slicer's own NRRD reader and the core reader agree voxel for voxel and in RAS."""
        import numpy as np

        from CovidCTScreenLib.input.volume_io import load_ct

        glue = mrmlGlue()
        node = self.loadSample()
        core = load_ct(RESOURCES / "SampleData" / SAMPLE_NAME)
        fromNode = glue.ct_volume_from_node(node)
        self.assertTrue(np.array_equal(fromNode.hu, core.hu))
        np.testing.assert_allclose(fromNode.origin, core.origin, atol=1e-4)
        np.testing.assert_allclose(fromNode.direction, core.direction, atol=1e-6)
        heat = glue.heatmap_node(np.zeros(core.shape, np.float32), core.spacing, core.origin, core.direction)
        np.testing.assert_allclose(glue.node_ijk_to_ras(heat), glue.node_ijk_to_ras(node), atol=1e-4)

    def test_bad_input_refused_without_nodes(self):
        import numpy as np

        from CovidCTScreenLib.errors import InputError

        node = slicer.util.addVolumeFromArray(np.full((8, 80, 80), 100, np.int16), name="not a CT")
        before = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            CovidCTScreenLogic().process(node)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)

    def test_process_sample_ct(self):
        import numpy as np

        self.delayDisplay("Screening the sample CT (a minute on CPU)")
        node = self.loadSample()
        before = slicer.util.arrayFromVolume(node).copy()
        logic = CovidCTScreenLogic()
        logic.ensureDependencies(askConfirmation=False)
        result = logic.process(node, device="auto")
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(node), before))  # input untouched
        self.assertIn(result["report"]["verdict"]["label"], ("COVID-19", "no COVID-19 pattern"))
        segmentation = result["segmentation"].GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 2)
        self.assertEqual(segmentation.GetNthSegment(0).GetName(), "right lung")
        self.assertGreater(result["table"].GetNumberOfRows(), 5)
        self.assertEqual(result["chart"].GetNumberOfPlotSeriesNodes(), 2)
        glue = mrmlGlue()
        np.testing.assert_allclose(glue.node_ijk_to_ras(result["heatmap"]), glue.node_ijk_to_ras(node), atol=1e-4)
        self.assertTrue(os.path.isfile(os.path.join(result["reportFolder"], "report.json")))
        self.delayDisplay("Test passed")
