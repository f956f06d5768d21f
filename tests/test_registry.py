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
    with pytest.raises(ConfigError, match="unknown stream 'split-mnist'; valid: domain-folders, domain-imagenet-r, "
                                          "mini-domain-digits, mini-split-digits, split-cifar100, split-cub200, "
                                          "split-imagenet-a, split-imagenet-r, split-objectnet, split-omnibenchmark, "
                                          "split-vtab$"):
        build_stream("split-mnist", image_spec=SPEC)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'ewc'; valid: .*full_ft.*linear"):
        build_strategy("ewc", {}, None, Runtime.resolve("cpu"))


def test_unknown_backbone_and_protocol_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown backbone 'vit-huge'; valid: clip-vit-b16, vit-mini, "
                                          "vit_base_patch16_224.augreg_in21k, .* or any pretrained timm"):
        build_backbone("vit-huge")
    with pytest.raises(ConfigError, match="unknown retention protocol 'linear_probe'; valid: head, knn, zeroshot"):
        PROTOCOLS.get("linear_probe")


def test_missing_checkpoint_says_how_to_regenerate(tmp_path):
    with pytest.raises(ConfigError, match="backbones.vit-mini.checkpoint: must be an existing file .*benchmark.pretrain"):
        build_backbone("vit-mini", checkpoint=str(tmp_path / "missing.safetensors"))


def test_bad_stream_parameter_names_the_key():
    with pytest.raises(ConfigError, match=r"streams.mini-split-digits.n_tasks: must be a divisor of the 10 classes"):
        build_stream("mini-split-digits", image_spec=SPEC, n_tasks=3)
    with pytest.raises(ConfigError, match=r"streams.mini-domain-digits.domains: must be distinct names"):
        build_stream("mini-domain-digits", image_spec=SPEC, domains=["clean", "sepia"])


def test_variant_labels_name_several_settings_of_one_strategy():
    from benchmark.config import parse_suite
    from benchmark.suite import plan_runs

    raw = {"backbones": {"vit-mini": {}}, "streams": {"mini-split-digits": {}},
           "strategies": {"lora@r4": {"rank": 4}, "lora@r16": {"rank": 16}}}
    specs = plan_runs(parse_suite(raw, "variants"), Runtime.resolve("cpu", "fp32", False))
    assert {s.strategy: s.strategy_params["rank"] for s in specs} == {"lora@r4": 4, "lora@r16": 16}
    assert len({s.run_id for s in specs}) == 2
    with pytest.raises(ConfigError, match=r"unknown strategy 'lorax@r4'; valid:"):
        plan_runs(parse_suite({**raw, "strategies": {"lorax@r4": {}}}, "variants"), Runtime.resolve("cpu"))
    with pytest.raises(ConfigError, match=r"strategies.lora@r4.rank: must be >= 1"):
        plan_runs(parse_suite({**raw, "strategies": {"lora@r4": {"rank": 0}}}, "variants"), Runtime.resolve("cpu"))
