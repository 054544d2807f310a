"""Glue for the Slicer modules: MRML nodes (needs Slicer) and the modules' non-GUI helpers (plain Python)."""
