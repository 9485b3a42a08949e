"""Weight initialisation shared by the model zoo (the convention of the CIFAR KD codebases)."""
from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module, linear_std: float | None = None) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions with zero bias; norm layers weight 1, bias 0.

    Linear layers keep PyTorch's default initialisation unless `linear_std` is given, in which case
    their weights are drawn from N(0, linear_std) and their biases set to 0 (VGG, MobileNet).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
