"""Lung mask: left / right lung and airway segmentation of a CT volume."""
