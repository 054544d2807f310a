"""Evaluation on labelled data: slice, study and segmentation metrics with bootstrap CIs, plots."""
