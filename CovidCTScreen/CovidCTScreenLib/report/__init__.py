"""Writing results: report folder (JSON, PNG, HTML, NRRD), DICOM SEG / SR export, safe output folders."""
