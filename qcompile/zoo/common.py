"""Shared helpers for zoo model definitions: weight init and BN statistics."""

from __future__ import annotations

import torch
from torch import nn


def init_weights(model: nn.Module, smooth_depthwise: bool = False) -> None:
    """Initialise weights from the global torch RNG so activations stay in range.

    Convs and hidden linears get Kaiming-normal weights (ReLU gain), BatchNorm
    gets gamma ~ U(0.5, 1.0) and beta ~ U(-0.1, 0.1), biases are small.
    With `smooth_depthwise`, depthwise kernels are noisy box filters instead
    (1 + 0.25 * N(0, 1); BN normalises the scale). Zero-mean random depthwise
    kernels make a deep MobileNetV2 amplify 8-bit quantization noise until it
    swamps the input-dependent signal.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and smooth_depthwise and m.groups > 1:
            with torch.no_grad():
                m.weight.normal_(1.0, 0.25)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.05, 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.0)
            nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.uniform_(m.bias, -0.05, 0.05)


@torch.no_grad()
def set_bn_stats(model: nn.Module, inputs: torch.Tensor, noise: float = 0.1) -> None:
    """Give every BatchNorm realistic running statistics.

    The stats are measured with one train-mode pass over `inputs` (so each
    layer sees normalised activations, as in a trained net) and then perturbed
    with seeded noise so the folded weights are not exactly normalising.
    Leaves the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    model.train()
    model(inputs)
    model.eval()
    for bn in bns:
        std = bn.running_var.sqrt()
        bn.running_mean += noise * std * torch.randn_like(std)
        bn.running_var *= torch.empty_like(std).uniform_(1 - noise, 1 + 2 * noise)
        bn.momentum = 0.1


@torch.no_grad()
def damp_residual_branches(model: nn.Module, gain: float) -> None:
    """Scale the last BatchNorm of every residual branch by `gain` (< 1).

    Trained residual nets carry most of the signal on the identity path and add small
    corrections; random ones at gain 1 let every block's rounding noise compound, until a
    one-step difference in an early layer flips the predicted class.
    """
    for m in model.modules():
        bn = m.residual_last_bn() if hasattr(m, "residual_last_bn") else None
        if bn is not None:
            bn.weight.mul_(gain)
            bn.bias.mul_(gain)


@torch.no_grad()
def fit_head(model: nn.Module, head: nn.Linear, inputs: torch.Tensor, labels: torch.Tensor,
             num_classes: int, margin: float = 8.0, ridge: float = 1e-2) -> None:
    """Fit `head` as a ridge-regression linear probe: class k's logit ~ margin, the others ~ 0.

    Outputs beyond `num_classes` get small random weights and bias -margin, so they never win
    (all-zero weights would give those channels a degenerate weight scale).
    """
    captured = []
    hook = head.register_forward_hook(lambda mod, args, out: captured.append(args[0]))
    try:
        model.eval()(inputs)
    finally:
        hook.remove()
    feats = captured[0].reshape(-1, head.in_features).double()
    mean = feats.mean(0)
    centred = feats - mean
    targets = torch.nn.functional.one_hot(labels, num_classes).double() * margin
    targets = targets - targets.mean(0)
    gram = centred.T @ centred + ridge * len(feats) * torch.eye(head.in_features,
                                                               dtype=torch.float64)
    weight = torch.linalg.solve(gram, centred.T @ targets).T  # (num_classes, in_features)
    head.weight.normal_(0.0, 0.01 * float(weight.std()))
    head.bias.fill_(-margin)
    head.weight[:num_classes] = weight.float()
    head.bias[:num_classes] = (margin / num_classes - weight @ mean).float()
