"""What every model in the zoo provides, so the engine and the feature distillers need no per-model code."""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

Stage = Callable[[torch.Tensor], torch.Tensor]


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


class GlobalAvgPool(nn.Module):
    """Average over the spatial positions, (N, C, H, W) -> (N, C, 1, 1): AdaptiveAvgPool2d(1) written as
    a mean, bitwise equal on CPU, whose CUDA backward has a deterministic kernel (the pooling's has none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class Classifier(nn.Module):
    """Base of every model: `forward` gives logits, `forward_features` gives a ModelOutput.

    `forward_features` is written once, here, from hooks each model provides or inherits:
      forward_stem(x): the stem's output, which is stages[0] unless `stem_is_stage` is False
          (default: the ResNet stem, `relu(bn1(conv1(x)))`);
      stage_layers(x): the stages in order, each mapping the previous output to its own (a module,
          or a small function where a stage has a pooling step first; x is the input, for a layout
          that depends on its size) (default: the ResNet naming, `layer1`, `layer2`, ...);
      pre_pool(f): what the last stage's output becomes before pooling, also in stages[-1]
          (default: unchanged);
    then `head` global-pools stages[-1] with `self.avgpool` and classifies it with `self.classifier`
    (an nn.Linear: CAT-KD uses its weights as a 1x1 convolution). `set_head` builds those two.
    """

    classifier: nn.Linear
    avgpool: nn.Module
    stem_is_stage = True

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def stage_layers(self, x: torch.Tensor) -> Sequence[Stage]:
        layers: list[Stage] = []
        while f"layer{len(layers) + 1}" in self._modules:
            layers.append(self._modules[f"layer{len(layers) + 1}"])
        return layers

    def pre_pool(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        out = self.forward_stem(x)
        stages = [out] if self.stem_is_stage else []
        for stage in self.stage_layers(x):
            out = stage(out)
            stages.append(out)
        stages[-1] = self.pre_pool(stages[-1])
        return self.head(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).logits

    def head(self, stages: list[torch.Tensor]) -> ModelOutput:
        """Global-pool the last stage (`self.avgpool`) and classify it: every model's common ending."""
        pooled = torch.flatten(self.avgpool(stages[-1]), 1)
        return ModelOutput(self.classifier(pooled), stages, pooled)

    def set_head(self, num_features: int, num_classes: int) -> None:
        """Global average pooling and a linear classifier over `num_features` channels."""
        self.avgpool = GlobalAvgPool()
        self.classifier = nn.Linear(num_features, num_classes)
        self.num_features = num_features
