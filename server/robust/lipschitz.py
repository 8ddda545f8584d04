"""The paper's Lipschitz penalty (Gandhi & Jain 2020, after Woods, Chen & Teuscher 2019):

    J_aug = J + λ / (C · N) · Σ_{i=1..C} ‖∇ₓ Z(x)_i‖²₂

Z are the pre-softmax logits, C the number of classes and N the batch size; the squared L2
norm runs over every input pixel of every sample. A model with small input gradients changes
its logits little under small perturbations, which is what an attacker exploits.

The paper's released code takes ``mean`` over classes × batch × pixels instead; that is this
penalty divided by the number of input values per sample (3·H·W), so its λ values
(5 … 5000) correspond to λ / (3·H·W) here. ``reduction="pixel_mean"`` reproduces the code.
"""

from __future__ import annotations

import torch

REDUCTIONS = ("paper", "pixel_mean")


def lipschitz_penalty(
    logits: torch.Tensor, inputs: torch.Tensor, lam: float, *, reduction: str = "paper"
) -> torch.Tensor:
    """λ/(C·N) Σ_i ‖∇ₓ Z(x)_i‖² for ``logits`` (N, C) computed from ``inputs`` (requires_grad).

    Uses double back-propagation (``create_graph=True``) so the penalty itself trains the model.
    Each sample's logits depend only on its own input in eval-style layers, so the gradient of
    the batch sum of logit i gives every sample's gradient at once; BatchNorm in training mode
    couples samples slightly, as in the paper's code.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if not inputs.requires_grad:
        raise ValueError(
            "inputs must require grad (call inputs.requires_grad_(True) before the forward pass)"
        )
    n, c = logits.shape
    total = logits.new_zeros(())
    for i in range(c):
        (grad,) = torch.autograd.grad(logits[:, i].sum(), inputs, create_graph=True)
        total = total + grad.float().pow(2).sum()
    penalty = total / (c * n)
    if reduction == "pixel_mean":
        penalty = penalty / inputs[0].numel()
    return lam * penalty


def input_gradient_norm(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of Σ_i ‖∇ₓ Z(x)_i‖ (no graph kept): how steep the model is at ``inputs``."""
    x = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        norms = torch.zeros(x.shape[0], device=x.device)
        for i in range(logits.shape[1]):
            (grad,) = torch.autograd.grad(logits[:, i].sum(), x, retain_graph=i + 1 < logits.shape[1])
            norms = norms + grad.flatten(1).norm(dim=1)
    return norms.mean().detach()
