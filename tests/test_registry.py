import pytest

from benchmark.backbones import build_backbone
from benchmark.datasets.images import ImageSpec
from benchmark.errors import ConfigError
from benchmark.retention import PROTOCOLS
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from strategies.base import build_strategy

SPEC = ImageSpec((1, 28, 28), (0.5,), (0.5,))


def test_unknown_stream_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown stream 'split-mnist'; valid: mini-domain-digits, mini-split-digits"):
        build_stream("split-mnist", image_spec=SPEC)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'ewc'; valid: .*full_ft.*linear"):
        build_strategy("ewc", {}, None, Runtime.resolve("cpu"))


def test_unknown_backbone_and_protocol_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown backbone 'vit-huge'; valid: vit-mini"):
        build_backbone("vit-huge")
    with pytest.raises(ConfigError, match="unknown retention protocol 'zeroshot'; valid: head, knn"):
        PROTOCOLS.get("zeroshot")


def test_missing_checkpoint_says_how_to_regenerate(tmp_path):
    with pytest.raises(ConfigError, match="backbones.vit-mini.checkpoint: must be an existing file .*benchmark.pretrain"):
        build_backbone("vit-mini", checkpoint=str(tmp_path / "missing.safetensors"))


def test_bad_stream_parameter_names_the_key():
    with pytest.raises(ConfigError, match=r"streams.mini-split-digits.n_tasks: must be a divisor of the 10 classes"):
        build_stream("mini-split-digits", image_spec=SPEC, n_tasks=3)
    with pytest.raises(ConfigError, match=r"streams.mini-domain-digits.domains: must be distinct names"):
        build_stream("mini-domain-digits", image_spec=SPEC, domains=["clean", "sepia"])
