"""Networks and model packages: architectures, model cards and weights, calibrated inference, Grad-CAM."""
