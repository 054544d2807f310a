"""Reading the input: CT volumes and DICOM series, labelled image / mask / volume datasets, slice preprocessing."""
