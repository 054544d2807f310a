"""Lesions: HU bands, lesion UNet segmentation, fibrotic streak candidates, manifestations and their distribution."""
