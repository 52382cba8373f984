"""Synthetic labelled images for the zoo CNNs: a learnable task, generated, never downloaded.

Class k is a fixed random low-frequency colour pattern; an image is its class pattern plus
noise.  The CNNs' classifiers are fitted to this task (a linear probe on their random features,
`common.fit_head`), so predictions have real margins, as a trained network's do, instead of the
near-ties of an untrained 1000-way head, where a one-step rounding difference flips the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_CLASSES = 10
PATTERN_SEED = 20_261_127
NOISE = 0.5


def class_patterns(channels: int, size: int, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(num_classes, channels, size, size) smooth random patterns, fixed by PATTERN_SEED."""
    gen = torch.Generator().manual_seed(PATTERN_SEED)
    coarse = torch.randn((num_classes, channels, 4, 4), generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def labelled_images(shape: tuple, n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """n images of `shape` (1, C, H, W) and their labels, from a private seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    patterns = class_patterns(shape[1], shape[2])
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    images = [patterns[k:k + 1] + NOISE * torch.randn(shape, generator=gen) for k in labels]
    return images, labels
