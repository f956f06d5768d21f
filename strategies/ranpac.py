"""RanPAC: Random Projections and Pre-trained Models for Continual Learning (McDonnell, Gong, Parvaneh, Abbasnejad,
van den Hengel; NeurIPS 2023; arXiv 2307.02251), after the official code (RanPAC/RanPAC@012927f `RanPAC.py`
`replace_fc`, `optimise_ridge_parameter`, `setup_RP`; `inc_net.py` `CosineLinear`; `args/*_publish.csv`).

1. Phase 1 (optional, `epochs` > 0): first-session adaptation as APER (`strategies._first_session`: a
   parameter-efficient module trained on the first task with a cosine head, then frozen; the head is discarded).
   `petl` names the module, among those RanPAC's code offers for phase 1 (`RanPAC.py:225-236`, `inc_net.py:80-113`):
   `adapter` (AdaptFormer), `ssf` (scale and shift of features) and `vpt_deep` / `vpt_shallow` (prompt tokens in
   every block / at the input; the official code fixes deep prompts of 5 tokens). Full fine-tuning is not one of
   them (RanPAC's `joint_full` trains on all the data at once, not on the first task).
2. After phase 1 a random projection W_rand in R^{d x M} (standard Gaussian, drawn once from torch's generator, as
   the reference's `torch.randn`) is frozen; h = ReLU(f W_rand) for the backbone's features f (`projection_dim` 0:
   h = f, the paper's "no RPs" ablation).
3. Every task: G += H^T H and Q += H^T Y over the task's training images under the test transform (Y one-hot, 0/1),
   lambda chosen from {10^-8, ..., 10^8} on the task's own images (below), W_o = (G + lambda I)^-1 Q.
   Lambda selection (official): the task's images in a random order (the reference's shuffled loader), the first
   int(0.8 N) fit a ridge on this task alone, the rest are held out; the lambda with the lowest mean squared error
   of H_val W - Y_val wins (`ridge_criterion: accuracy`: the highest held-out accuracy instead); ties go to the
   smaller lambda (numpy's argmin).
4. Inference (`inference: raw`, official): logits = h W_o. `inference: cosine` is LAMDA-PILOT's port
   (models/ranpac.py: a `CosineLinear` head), cos(h, W_o[:, c]): a different classifier, offered as an option.

W_rand, G, Q, W_o and the chosen lambdas are buffers: checkpointed (a resumed run uses the same projection) and
counted in `params_added`; `report()` gives their memory (`ranpac_memory_mb`) and the lambdas. G is M x M:
800 MB in float64 (400 MB in float32) at the reference's M = 10,000.

Presets (`preset:`, filling the unset fields): `reference` (ViT-B/16 on CIFAR-100, args/cifar224_publish.csv ID 7:
M 10,000, phase 1 with the adapter, 20 epochs, batch 48, lr 0.01, wd 5e-4), `reference-imagenet-r`
(args/imagenetr_publish.csv ID 7: M 10,000, phase 1 with SSF, 20 epochs, batch 48, lr 0.01, wd 5e-4, `min_lr` 0) and
`mini` (default: M 1,000, phase 1 with the adapter as APER's mini preset: 5 epochs, batch 16, lr 0.05, wd 5e-4).
LAMDA-PILOT's ImageNet-R port trains the adapter instead (exps/ranpac_inr.json: 10 epochs, batch 16, lr 0.05, wd
5e-3): `{preset: reference-imagenet-r, petl: adapter, epochs: 10, batch_size: 16, lr: 0.05, weight_decay: 5.0e-3}`.

The `reference*` presets also run the reference's recipe (benchmark/recipe.py): fp32; [0, 1] pixels without
mean/std, RandomResizedCrop scale (0.05, 1) (bilinear), test Resize(224) on CIFAR (`input: unnormalised-resize224`,
RanPAC `utils/data.py:36-43`) and Resize(256) + CenterCrop(224) on ImageNet-R (`input: unnormalised`); phase 1's lr
cosine stepped per epoch (`schedule: cosine-epochs`, `CosineAnnealingLR(T_max=epochs)`, RanPAC.py:232, 279). The
reference's published number is the mean over tasks of the final row (trainer.py:116), the suite's `avg_acc`.

Deviations from the reference:
- Precision (`statistics_dtype`): G, Q and every solve are float64 by default; the reference accumulates and solves
  in float32, where a solve at lambda = 10^-8 with M > N is dominated by rounding and can change which lambda wins.
  `statistics_dtype: float32` stores G and Q as the reference does (half the memory) and still solves in float64.
  Features and the projection are float32 (computed under the suite's autocast), the head runs in float32.
- The grid's ridges are computed from one eigendecomposition of the smaller Gram matrix of the 80% part
  (H H^T when it has fewer rows than columns, via (H^T H + lambda I)^-1 H^T = H^T (H H^T + lambda I)^-1): the same
  solutions as 17 solves, at a fraction of the cost. The final W_o is a direct solve.
- `inference: cosine` drops the learnt sigma that LAMDA-PILOT's `CosineLinear` keeps from phase 1: the same argmax,
  other logits (ECE differs).
- The mini preset anneals phase 1's lr per step (`schedule: cosine`) and keeps the suite's input pipeline.
- Domain-incremental streams: the statistics accumulate over domains (as the official DIL code's G and Q do); the
  official code's separate DIL prototype path (for use_RP false) is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import apply_preset, require
from benchmark.streams import Task
from strategies._first_session import PETLS, FirstSessionConfig, adapt_first_session
from strategies._prototypes import cosine_logits, task_features
from strategies.base import Strategy, register

RECIPE = dict(schedule="cosine-epochs", precision="fp32")  # RanPAC.py:232, 279; no autocast in the reference
PRESETS = {
    "mini": dict(petl="adapter", projection_dim=1000, epochs=5, batch_size=16, lr=0.05, weight_decay=5e-4),
    "reference": dict(petl="adapter", projection_dim=10000, epochs=20, batch_size=48, lr=0.01, weight_decay=5e-4,
                      input="unnormalised-resize224", **RECIPE),
    "reference-imagenet-r": dict(petl="ssf", projection_dim=10000, epochs=20, batch_size=48, lr=0.01,
                                 weight_decay=5e-4, input="unnormalised", **RECIPE),
}
PHASE_ONE = ("adapter", "ssf", "vpt_deep", "vpt_shallow")  # the PETL methods RanPAC's code trains in phase 1
RIDGE_GRID = tuple(10.0 ** k for k in range(-8, 9))  # the official `10.0 ** np.arange(-8, 9)`
CRITERIA = ("mse", "accuracy")
INFERENCE = ("raw", "cosine")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class RanPACConfig(FirstSessionConfig):
    preset: str = "mini"  # fills the fields left null: mini, reference (CIFAR-100), reference-imagenet-r
    projection_dim: Optional[int] = None  # M; 0 = no random projection (ridge on the features themselves)
    held_out: float = 0.2  # share of each task's images held out to choose lambda (official: 0.2)
    ridge_criterion: str = "mse"  # mse (official) or accuracy on the held-out images
    inference: str = "raw"  # raw (official: h W_o) or cosine (LAMDA-PILOT's port)
    statistics_dtype: str = "float64"  # storage of G and Q: float64, or float32 (the reference)

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        require(self.petl in PHASE_ONE, "petl", f"one of {', '.join(PHASE_ONE)}", self.petl)
        self.check_first_session(min_epochs=0)
        require(self.projection_dim >= 0, "projection_dim", ">= 0", self.projection_dim)
        require(0 < self.held_out < 1, "held_out", "in (0, 1)", self.held_out)
        require(self.ridge_criterion in CRITERIA, "ridge_criterion", f"one of {', '.join(CRITERIA)}",
                self.ridge_criterion)
        require(self.inference in INFERENCE, "inference", f"one of {', '.join(INFERENCE)}", self.inference)
        require(self.statistics_dtype in DTYPES, "statistics_dtype", f"one of {', '.join(DTYPES)}",
                self.statistics_dtype)


def ridge_solutions(H: torch.Tensor, Y: torch.Tensor, ridges: tuple[float, ...]) -> Iterator[torch.Tensor]:
    """(H^T H + lambda I)^-1 H^T Y for each lambda, from one eigendecomposition of the smaller Gram matrix."""
    if H.shape[0] < H.shape[1]:  # dual form: H^T (H H^T + lambda I)^-1 Y
        values, vectors = torch.linalg.eigh(H @ H.T)
        projected, back = vectors.T @ Y, H.T @ vectors
    else:
        values, vectors = torch.linalg.eigh(H.T @ H)
        projected, back = vectors.T @ (H.T @ Y), vectors
    for ridge in ridges:
        yield back @ (projected / (values + ridge)[:, None])


def select_ridge(H: torch.Tensor, Y: torch.Tensor, held_out: float, criterion: str) -> float:
    """The official lambda: fit on the first int((1 - held_out) N) rows, score on the rest, best grid value."""
    fit = int(H.shape[0] * (1 - held_out))
    scores = []
    for W in ridge_solutions(H[:fit], Y[:fit], RIDGE_GRID):
        predicted = H[fit:] @ W
        if criterion == "mse":
            scores.append(F.mse_loss(predicted, Y[fit:]))
        else:
            scores.append(-(predicted.argmax(1) == Y[fit:].argmax(1)).double().mean())
    return RIDGE_GRID[int(torch.stack(scores).argmin())]


@register("ranpac")
class RanPAC(Strategy):
    Config = RanPACConfig
    classifies_features = True
    feature_free = ("projection", "gram", "targets", "readout", "ridges")  # the head's state
    shares_with = "first-session adapters"

    def __init__(self, backbone: nn.Module, config: RanPACConfig, runtime) -> None:
        super().__init__(backbone, config, runtime)
        self.backbone.requires_grad_(False)
        self.first_session = (PETLS.get(config.petl)(self.backbone, config).to(runtime.device) if config.epochs
                              else None)
        device, dtype = runtime.device, DTYPES[config.statistics_dtype]
        self.width = config.projection_dim or self.feature_dim
        # drawn after phase 1 (as the reference), so a resumed run must take it from the checkpoint
        self.register_buffer("projection", torch.zeros(self.feature_dim, 0, device=device))
        # G and Q, allocated at the first task (a strategy built only to check a configuration stays small)
        self.register_buffer("gram", torch.zeros(0, 0, dtype=dtype, device=device))
        self.register_buffer("targets", torch.zeros(0, 0, dtype=dtype, device=device))
        self.register_buffer("readout", torch.zeros(0, self.width, device=device))  # W_o^T, one row per class
        self.register_buffer("ridges", torch.zeros(0, dtype=torch.float64, device=device))  # lambda per task

    def training_bytes(self) -> int:
        """The random projection (d x M, float32) and, in the statistics' dtype, the Gram matrix G (M x M) with the
        same again for solving it (its inverse)."""
        return 4 * self.feature_dim * self.config.projection_dim + 2 * self.width**2 * self.gram.element_size()

    def train_task(self, task: Task) -> None:
        if task.index == 0 and self.first_session is not None:
            adapt_first_session(self, self.first_session, self.backbone, task, self.config, self.runtime)
        if task.index == 0 and self.config.projection_dim:
            self.projection = torch.randn(self.feature_dim, self.config.projection_dim).to(self.runtime.device)
        self.eval()
        features, labels = task_features(self.features, task.train_unaugmented, self.runtime, self.feature_key())
        H = self.hidden(features).to(self.gram.dtype)
        Y = F.one_hot(labels, task.num_outputs).to(self.gram.dtype)
        self.accumulate(H, Y)
        order = torch.randperm(len(labels)).to(H.device)  # the reference's shuffled loader
        ridge = select_ridge(H[order].double(), Y[order].double(), self.config.held_out, self.config.ridge_criterion)
        self.ridges = torch.cat([self.ridges, self.ridges.new_tensor([ridge])])
        self.solve(ridge)

    @torch.no_grad()
    def accumulate(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        """G += H^T H; Q += H^T Y, Q first growing to the classes seen."""
        if self.gram.numel() == 0:
            self.gram = H.new_zeros(self.width, self.width)
            self.targets = H.new_zeros(self.width, 0)
        grow = Y.shape[1] - self.targets.shape[1]
        if grow > 0:
            self.targets = torch.cat([self.targets, self.targets.new_zeros(self.targets.shape[0], grow)], dim=1)
        self.gram += H.T @ H
        self.targets += H.T @ Y

    @torch.no_grad()
    def solve(self, ridge: float) -> None:
        """W_o = (G + lambda I)^-1 Q, in float64."""
        gram = self.gram.double()
        identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        self.readout = torch.linalg.solve(gram + ridge * identity, self.targets.double()).T.float()

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """h = ReLU(f W_rand) (or f without a projection), in float32."""
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            return F.relu(features @ self.projection) if self.config.projection_dim else features

    def predict(self, x: torch.Tensor, task_id: Optional[int] = None) -> torch.Tensor:
        return self.classify(self.features(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits over the classes seen (none before the first task, when the projection is not drawn yet)."""
        if self.readout.shape[0] == 0:
            return features.new_zeros(features.shape[0], 0)
        h = self.hidden(features)
        with torch.autocast(h.device.type, enabled=False):
            return cosine_logits(h, self.readout) if self.config.inference == "cosine" else h @ self.readout.T

    def feature_identity(self) -> str:
        """The (adapted) backbone's features, a function of the modules alone (backbone, first-session module)."""
        return ""

    def recipe(self) -> dict[str, Any]:
        """Phase 1's training recipe; without phase 1 (`epochs: 0`) nothing trains by the shared loop (the ridge head
        is solved in closed form), so nothing to record (its `train_config` would be an invalid zero-epoch one)."""
        return super().recipe() if self.config.epochs else {}

    def report(self) -> dict[str, Any]:
        stored = (self.projection, self.gram, self.targets, self.readout)
        return {"ridge_lambdas": self.ridges.tolist(),
                "ranpac_memory_mb": {name: t.numel() * t.element_size() / 2**20
                                     for name, t in zip(("projection", "G", "Q", "readout"), stored)}}
