"""SSF, scaling and shifting features (Lian, Zhou, Feng, Wang; "Scaling & Shifting Your Features: A New Baseline for
Efficient Model Tuning", NeurIPS 2022), on a frozen timm ViT, where RevisitingCIL@a2e6b71
`convs/vision_transformer_ssf.py` puts it (RanPAC@012927f `petl/vision_transformer_ssf.py` is the same file).

Each scale-and-shift is y = gamma * x + beta per channel of one module's output:
- the patch embedding's projection, per channel of the convolution's output (`PatchEmbed.forward`, l. 363-367);
- in every block: LN1 and LN2 (`Block.forward`, l. 253-255), the attention's qkv projection (3d channels,
  l. 198-199) and output projection (l. 210-211), the MLP's fc1 (4d channels, before the activation, l. 158-160)
  and fc2 (l. 164-166);
- the final norm (`forward_features`, l. 533-535).
ViT-B/16: 2 x (768 + 12 x (768 + 2304 + 768 + 768 + 3072 + 768) + 768) = 205,824 numbers, the difference between
the "All params" lines of RevisitingCIL's logs with and without SSF (logs/aper_ssf/cifar224/
exp_1993_pretrained_vit_b16_224_in21k_ssf.log:23, 86,004,480; logs/aper_finetune/cifar224/
exp_1993_pretrained_vit_b16_224_in21k.log:21, 85,798,656).

Initialisation as the reference's `init_ssf_scale_shift` (l. 378-385): gamma ~ N(1, 0.02), beta ~ N(0, 0.02), drawn
from torch's generator when the module is built. So a fresh SSF network is not the pre-trained one (as in the
reference); `bypass` turns every scale-and-shift off, which is the pre-trained network exactly (APER's frozen branch).

Deviations: attached by forward hooks on the backbone's own modules (names and parameters unchanged), where the
reference builds a second ViT class; a patch-embedding norm (ViT-B/16 has none) gets no second scale-and-shift
(the reference's `ssf_scale_2` of `PatchEmbed`); under bf16 autocast gamma and beta are applied at the activation's
precision.
"""

from __future__ import annotations

import torch
from torch import nn

from strategies._first_session import FirstSessionConfig, FirstSessionModule, register_first_session

BLOCK_TARGETS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")  # in every block


class ScaleShift(nn.Module):
    """gamma * x + beta along one channel axis of a module's output, applied by a forward hook on that module."""

    def __init__(self, channels: int, channel_axis: int = -1) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(channels).normal_(0.0, 0.02))
        self.channel_axis = channel_axis
        self.bypass = False  # an instance setting from the start, so that fingerprints see it (benchmark.sharing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return x * self.scale.to(x.dtype).view(shape) + self.shift.to(x.dtype).view(shape)

    def attach(self, module: nn.Module) -> None:
        module.register_forward_hook(self._transform_output)

    def _transform_output(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output if self.bypass else self(output)


def ssf_targets(backbone: nn.Module) -> list[tuple[str, int, int]]:
    """(module path, channels, channel axis) of every place SSF scales and shifts, in forward order."""
    dim = backbone.embed_dim
    targets = [("patch_embed.proj", backbone.patch_embed.proj.out_channels, 1)]  # a convolution: channels on axis 1
    for index, block in enumerate(backbone.blocks):
        for path in BLOCK_TARGETS:
            module = block.get_submodule(path)
            channels = module.out_features if isinstance(module, nn.Linear) else dim
            targets.append((f"blocks.{index}.{path}", channels, -1))
    targets.append(("norm", dim, -1))
    return targets


class ScaleShiftFeatures(FirstSessionModule):
    """Every scale-and-shift of SSF on `backbone`, attached on construction (`paths[i]` is where `layers[i]` acts)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.paths = tuple(path for path, _, _ in ssf_targets(backbone))
        self.layers = nn.ModuleList(ScaleShift(channels, axis) for _, channels, axis in ssf_targets(backbone))
        for path, layer in zip(self.paths, self.layers):
            layer.attach(backbone.get_submodule(path))

    def switches(self) -> list[nn.Module]:
        return list(self.layers)


@register_first_session("ssf")
def scale_shift_features(backbone: nn.Module, config: FirstSessionConfig) -> ScaleShiftFeatures:
    return ScaleShiftFeatures(backbone)
