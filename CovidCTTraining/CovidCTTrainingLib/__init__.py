"""CovidCTTraining core: retrain slice classifiers and export model packages (no slicer import)."""
