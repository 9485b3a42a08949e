"""What every model in the zoo provides, so the engine and the feature distillers need no per-model code."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """One forward pass with the features that distillers may need.

    logits: (N, C) class scores.
    stages: feature maps after each stage, shallow to deep; stages[-1] is the map that the
        global pooling turns into `pooled` (CAT-KD's class activation maps come from it).
    pooled: (N, D) pooled feature that the classifier maps to the logits.
    """

    logits: torch.Tensor
    stages: list[torch.Tensor]
    pooled: torch.Tensor


class Classifier(nn.Module):
    """Base of every model: `forward` gives logits, `forward_features` gives a ModelOutput.

    Subclasses implement `forward_features` and keep their final linear layer in
    `self.classifier` (an nn.Linear: CAT-KD uses its weights as a 1x1 convolution).
    """

    classifier: nn.Linear

    def forward_features(self, x: torch.Tensor) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def head(self, stages: list[torch.Tensor]) -> ModelOutput:
        """Global-pool the last stage (`self.avgpool`) and classify it: every model's common ending."""
        pooled = torch.flatten(self.avgpool(stages[-1]), 1)
        return ModelOutput(self.classifier(pooled), stages, pooled)
