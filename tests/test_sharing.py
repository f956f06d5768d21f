"""Work shared across and inside runs never changes a number: every built-in strategy's result is the same with
sharing on and off, and the fingerprint that decides what is shared sees every kind of change."""

import copy
import dataclasses

import pytest
import torch
import yaml

from benchmark.evaluation import StrategyFeatures
from benchmark.results import iter_results
from benchmark.runtime import Runtime
from benchmark.sharing import MEMO, STORE, computing_everything, module_fingerprint, shared_pass
from conftest import builtin_strategies
from strategies import STRATEGIES
from strategies.base import build_strategy
from test_strategies import FITS_TWO_BLOCKS
from test_suite import suite

TIMINGS = ("train_s", "eval_s", "wall_time_s", "peak_memory_mb", "threads", "train_images_per_s",
           "eval_images_per_s", "peak_host_mb")
RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def cheap(name: str) -> dict:
    """One epoch of every phase a strategy trains in epochs (its tasks, classifier alignment, task inference);
    settings that fit the two-block test backbone."""
    fields = {f.name for f in dataclasses.fields(STRATEGIES.get(name).Config)}
    return {**{field: 1 for field in fields if field.endswith("epochs")}, **FITS_TWO_BLOCKS.get(name, {})}


def numbers(out) -> dict:
    """Each run's result without what legitimately differs between two executions (timings, versions)."""
    results = {}
    for result in iter_results(out):
        cost = {k: v for k, v in result["cost"].items() if k not in TIMINGS}
        results[result["run_id"]] = {**{k: v for k, v in result.items() if k not in ("cost", "versions")},
                                     "cost": cost}
    return results


SPLIT = {"mini-split-digits": {"n_tasks": 2}}
DOMAINS = {"mini-domain-digits": {"domains": ["clean", "rotated"]}}
# The domain stream (same classes, transformed images) for one strategy of each way of sharing: a trained network,
# a frozen prefix, the frozen backbone, first-session adapters, the prompt query, an adapter bank (test time).
DOMAIN_SHARERS = ("ease", "full_ft", "l2p", "ranpac", "simplecil", "topk")


def test_shared_stored_and_unshared_suites_write_the_same_results_for_every_strategy(tmp_path, tiny_backbone_params):
    """Shared in memory (the default store under the results folder filled on the way), then in a fresh memo from
    that store only (as another process or invocation would), then nothing shared: the same results. Every strategy
    on the split stream, one of each way of sharing on the domain stream too."""
    names = builtin_strategies()
    assert set(DOMAIN_SHARERS) <= set(names)
    store = tmp_path / "out-memory" / "cache" / "features"
    outs = {}
    for mode, settings in [("memory", {}), ("store", {"cache": str(store)}), ("off", {"share": False})]:
        legs = [("", SPLIT, names)] + ([] if mode == "store" else [("-domains", DOMAINS, DOMAIN_SHARERS)])
        MEMO.clear()
        STORE[0] = None  # counts start again (the suite opens the store anew)
        for suffix, streams, strategies in legs:
            config = tmp_path / f"{mode}{suffix}.yaml"
            config.write_text(yaml.safe_dump({
                "backbones": {"vit-mini": tiny_backbone_params}, "streams": streams,
                "strategies": {name: cheap(name) for name in strategies},
                "retention": {"eval_size": 60, "protocols": {"head": {}, "knn": {"bank_size": 40}}},
                "device": "cpu", "precision": "bf16", **settings}))
            assert suite(config, tmp_path / f"out-{mode}{suffix}") == 0
            if mode == "memory" and not suffix:
                assert STORE[0].misses > 0 and STORE[0].hits == 0 and any(store.glob("*.pt"))
        if mode == "memory":
            assert MEMO.hits > 0  # something was shared: the comparison below is not between two unshared suites
        elif mode == "store":  # most feature sets the memo missed came from disk (LoRA's and SD-LoRA's networks after
            # a task fingerprint differently from the first suite's, by which passes ran before: those are computed)
            assert STORE[0].hits > 10 * STORE[0].misses and STORE[0].damaged == 0
        else:
            assert MEMO.hits == MEMO.misses == 0
        outs[mode] = {run: result for suffix, _, _ in legs
                      for run, result in numbers(tmp_path / f"out-{mode}{suffix}").items()}
    assert len(outs["memory"]) == len(names) + len(DOMAIN_SHARERS) and len(outs["store"]) == len(names)
    assert outs["memory"] == outs["off"]
    assert outs["store"] == {run: result for run, result in outs["off"].items() if run in outs["store"]}


def test_fingerprint_follows_tensors_settings_and_hooks(backbone):
    model = copy.deepcopy(backbone.model)
    key = module_fingerprint(model)
    assert module_fingerprint(copy.deepcopy(model)) == key  # equal copies: equal keys (shared across runs)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight[0, 0] += 1e-3
    changed = module_fingerprint(model)
    assert changed != key
    model.blocks[0].attn.scale = model.blocks[0].attn.scale * 2  # a plain setting
    assert module_fingerprint(model) != changed
    scaled = module_fingerprint(model)
    handle = model.blocks[1].register_forward_hook(lambda module, args, out: out * 0)
    assert module_fingerprint(model) != scaled
    handle.remove()
    assert module_fingerprint(model) == scaled
    model.eval()
    assert module_fingerprint(model) != module_fingerprint(model.train())  # train / eval mode
    head = module_fingerprint(model, skip=("head",))
    with torch.no_grad():
        model.head.weight.add_(1.0) if isinstance(model.head, torch.nn.Linear) else None
    assert module_fingerprint(model, skip=("head",)) == head


def test_strategies_of_one_family_share_the_pretrained_features_and_others_do_not(backbone):
    strategies = {name: build_strategy(name, cheap(name), copy.deepcopy(backbone.model), RUNTIME)
                  for name in ("full_ft", "linear", "lora", "slca")}
    keys = {name: s.eval().feature_key() for name, s in strategies.items()}
    assert keys["full_ft"] == keys["linear"]  # the same pre-trained backbone, features its function alone
    assert keys["lora"] != keys["linear"]  # adapters are modules of the features (even at zero)
    assert keys["slca"] != keys["linear"]  # another class: its configuration and class decide (the default)
    images = torch.rand(5, 1, 28, 28)
    MEMO.clear()
    first = StrategyFeatures(strategies["full_ft"], RUNTIME)(images)
    second = StrategyFeatures(strategies["linear"], RUNTIME)(images)
    assert second is first and MEMO.hits == 1
    with torch.no_grad(), RUNTIME.autocast():
        assert torch.equal(first, strategies["linear"].features(images))


def test_a_trained_network_is_not_served_stale_features(backbone, stream):
    strategy = build_strategy("full_ft", {"epochs": 1}, copy.deepcopy(backbone.model), RUNTIME)
    images = torch.rand(5, 1, 28, 28)
    before = StrategyFeatures(strategy.eval(), RUNTIME)(images)
    strategy.train_task(stream.tasks[0])
    after = StrategyFeatures(strategy.eval(), RUNTIME)(images)
    assert not torch.equal(before, after)
    with torch.no_grad(), RUNTIME.autocast():
        assert torch.equal(after, strategy.features(images).float())


def test_a_frozen_prefix_is_run_once_on_evaluation_images(backbone, stream):
    strategy = build_strategy("topk", {"epochs": 1, "k": 1}, copy.deepcopy(backbone.model), RUNTIME)
    images = torch.rand(70, 1, 28, 28)  # more than one evaluation batch
    MEMO.clear()
    for task in stream.tasks[:2]:
        strategy.train_task(task)
        strategy.eval()
        shared = StrategyFeatures(strategy, RUNTIME)(images)
        with torch.no_grad(), RUNTIME.autocast():
            direct = torch.cat([strategy.features(images[:64]), strategy.features(images[64:])]).float()
        assert torch.equal(shared, direct)
    assert MEMO.hits == 1  # the second evaluation took the prefix's outputs; the trained block ran again


def test_shared_pass_shares_only_gradient_free_eval_passes_of_an_unchanged_network():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5)).eval()
    calls = []

    def forward(x):
        calls.append(len(x))
        return model(x)

    x = torch.randn(5, 4)
    context = RUNTIME.context
    MEMO.clear()
    with torch.no_grad():
        first = shared_pass(model, "test", forward, x, True, context)
        assert shared_pass(model, "test", forward, x.clone(), True, context) is first  # equal bytes: shared
        assert len(calls) == 1
        shared_pass(model, "other identity", forward, x, True, context)
        shared_pass(model, "test", forward, x, False, context)  # sharing off
        assert len(calls) == 3
        model.train()  # dropout draws random numbers: never taken from the memo
        shared_pass(model, "test", forward, x, True, context)
        shared_pass(model, "test", forward, x, True, context)
        assert len(calls) == 5
        model.eval()
        model[0].weight.add_(1.0)  # the network changed: computed again
        changed = shared_pass(model, "test", forward, x, True, context)
        assert len(calls) == 6 and not torch.equal(changed, first)
    shared_pass(model, "test", forward, x, True, context)  # autograd on: computed
    assert len(calls) == 7


@pytest.mark.parametrize("name", ["l2p", "dualprompt", "coda_prompt"])
def test_an_evaluation_runs_the_prompt_query_once_per_batch(name, backbone, stream):
    """The logits, retention features and task selection of one evaluation read one query pass per batch, and a
    later evaluation of the same images none (the prompt-free pass is the backbone's own forward)."""
    from test_prompts import prompt_strategy

    strategy = prompt_strategy(name, backbone.model)
    strategy.train_task(stream.tasks[0])
    strategy.runtime = strategy.prompted.runtime = dataclasses.replace(strategy.runtime, share=True)
    queries = []
    strategy.backbone.register_forward_hook(lambda *args: queries.append(1))
    strategy.eval()
    x = stream.tasks[0].train[0][0].unsqueeze(0).repeat(6, 1, 1, 1)
    MEMO.clear()
    with torch.no_grad():
        logits = strategy.predict(x)
        strategy.features(x)
        strategy.selected_task(x)
        assert len(queries) == 1
        assert torch.equal(strategy.predict(x.clone()), logits) and len(queries) == 1
        with computing_everything():
            assert torch.equal(strategy.predict(x), logits) and len(queries) == 2  # unshared: the same logits
