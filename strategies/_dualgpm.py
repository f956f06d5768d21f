"""InfLoRA's subspace record (DualGPM, as `liangyanshuo/InfLoRA` `methods/inflora.py::update_DualGPM` keeps it): for
every adapted layer, an orthonormal basis of the input subspace that earlier tasks use, or of the one they leave free.

The record of a layer holds whichever of the two is smaller (at most half the input width): as "remove" the basis
spans the used subspace, which a new task's down-projection must avoid (project it out); as "retain" it spans the
free subspace, to which the down-projection is restricted (project onto it). After each task the task's input
covariance C of the layer extends it:

- the energy of a spectrum is the sum of squared singular values of C (C itself, not the inputs: the reference's
  criterion, with S the singular values of the d x d covariance);
- first task: the record is the top r left singular vectors of C, r = #{k : cumulative energy share of the first k
  < threshold} (at least 1);
- "remove": the directions of C outside the record, (I - U U^T) C, are added one by one, largest first, while the
  share of C's energy inside the record stays below the threshold;
- "retain": the top directions of the free part U U^T C are taken out of the free basis one by one while the share
  of C's energy in the free part stays >= 1 - threshold;
- a "remove" basis wider than d / 2 is replaced by its orthogonal complement and becomes "retain".

The threshold moves linearly from `start` (0.95 CIFAR-100, 0.98 ImageNet-R) at the first task towards `end` (1.0)
at task `total` (the reference's `total_sessions`): start + (end - start) t / total.

Deviation: on the first task the reference labels a record of r >= d / 2 columns "retain" while it still holds the
used (top) directions, and its summary step then fails an assertion unless r = d / 2; here such a record is treated as
"remove" and turned into its complement by the summary rule (what the labels mean everywhere else). The spectra are
computed in float64 (the reference: float32), the bases stored in float32.
"""

from __future__ import annotations

import torch
from torch import nn


def threshold(task: int, total: int, start: float, end: float = 1.0) -> float:
    """The energy threshold after task `task` (0-based) of the reference's schedule."""
    return start + (end - start) * task / total


def energies(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(matrix) ** 2


class SubspaceRecord(nn.Module):
    """Per layer a basis (d x k, buffers `basis_<layer>`, k growing) and whether it is the free subspace (`retain`)."""

    def __init__(self, layers: int, dim: int) -> None:
        super().__init__()
        self.layers, self.dim = layers, dim
        for layer in range(layers):
            self.register_buffer(f"basis_{layer}", torch.zeros(dim, 0))
        self.register_buffer("retain", torch.zeros(layers, dtype=torch.bool))

    def basis(self, layer: int) -> torch.Tensor:
        return getattr(self, f"basis_{layer}")

    def restrict(self, layer: int, matrix: torch.Tensor) -> torch.Tensor:
        """`matrix` (d x n) with its columns restricted to the subspace old tasks leave free."""
        basis = self.basis(layer).to(matrix)
        inside = basis @ (basis.T @ matrix)
        return inside if bool(self.retain[layer]) else matrix - inside

    def used_projector(self, layer: int) -> torch.Tensor:
        """The orthogonal projector onto the subspace the record marks as used by old tasks (d x d)."""
        basis = self.basis(layer).double()
        inside = basis @ basis.T
        return torch.eye(self.dim, dtype=inside.dtype) - inside if bool(self.retain[layer]) else inside

    @torch.no_grad()
    def update(self, layer: int, covariance: torch.Tensor, share: float) -> None:
        """Extend layer `layer`'s record with a finished task's input covariance, at energy threshold `share`."""
        covariance = covariance.detach().double().cpu()
        basis = self.basis(layer).double().cpu()
        if bool(self.retain[layer]):
            basis = shrink_free(basis, covariance, share)
        elif basis.shape[1] == 0:
            basis = first_basis(covariance, share)
        else:
            basis = grow_used(basis, covariance, share)
        retain = bool(self.retain[layer])
        if not retain and basis.shape[1] > self.dim / 2:
            basis, retain = torch.linalg.svd(basis).U[:, basis.shape[1]:], True
        setattr(self, f"basis_{layer}", basis.to(self.retain.device, torch.float32))
        self.retain[layer] = retain


def first_basis(covariance: torch.Tensor, share: float) -> torch.Tensor:
    """The top r left singular vectors, r = #{k : energy share of the top k < share}, at least 1."""
    U, S, _ = torch.linalg.svd(covariance)
    cumulative = torch.cumsum(S**2, 0) / (S**2).sum()
    rank = int((cumulative < share).sum())
    return U[:, :max(rank, 1)]


def grow_used(basis: torch.Tensor, covariance: torch.Tensor, share: float) -> torch.Tensor:
    """"remove": add the new directions, largest first, until the record holds `share` of the covariance's energy."""
    total = energies(covariance).sum()
    U, S, _ = torch.linalg.svd(covariance - basis @ (basis.T @ covariance))
    ratio = S**2 / total
    accumulated = 1 - float((S**2).sum() / total)  # the share already inside the record
    added = 0
    while added < len(ratio) and accumulated < share:
        accumulated += float(ratio[added])
        added += 1
    return torch.cat([basis, U[:, :added]], 1)[:, :basis.shape[0]]


def shrink_free(basis: torch.Tensor, covariance: torch.Tensor, share: float) -> torch.Tensor:
    """"retain": remove the free part's top directions while the free part holds >= 1 - share of the energy."""
    total = energies(covariance).sum()
    U, S, _ = torch.linalg.svd(basis @ (basis.T @ covariance))
    ratio = S**2 / total
    remaining = float((S**2).sum() / total)  # the share still in the free subspace
    removed = 0
    while removed < len(ratio) and remaining >= 1 - share:
        remaining -= float(ratio[removed])
        removed += 1
    if removed == 0:
        return basis
    used = U[:, :removed]
    left = torch.linalg.svd(basis - used @ (used.T @ basis)).U
    return left[:, :basis.shape[1] - removed]
