"""Pre-train the vit-mini backbone on Fashion-MNIST train and write it as a safetensors file with its card.

    python -m benchmark.pretrain [--epochs 40] [--device auto] [--out benchmark/assets/vit-mini.safetensors]

The card (same name, .json) records the architecture, the recipe, the command and the measured Fashion-MNIST
test accuracy. A long job: it never runs in CI; tests run it at toy size (`--limit`).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from benchmark.backbones import VIT_MINI_ARCH, VIT_MINI_CHECKPOINT, VIT_MINI_IMAGE, create_vit_mini
from benchmark.datasets.fashion_mnist import DEBIAN_DIR, DEFAULT_DATA_DIR, load_fashion_mnist
from benchmark.datasets.images import ImageSpec, to_backbone_input


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many train/test images (toy runs)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--debian-dir", default=str(DEBIAN_DIR))
    parser.add_argument("--out", default=str(VIT_MINI_CHECKPOINT))
    parser.add_argument("--depth", type=int, default=VIT_MINI_ARCH["depth"], help="blocks (smaller for toy runs)")
    parser.add_argument("--embed-dim", type=int, default=VIT_MINI_ARCH["embed_dim"])
    parser.add_argument("--num-heads", type=int, default=VIT_MINI_ARCH["num_heads"])
    return parser.parse_args(argv)


def architecture(args: argparse.Namespace) -> dict:
    return dict(VIT_MINI_ARCH, depth=args.depth, embed_dim=args.embed_dim, num_heads=args.num_heads)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (pad + crop), per image, on the batch."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dy, dx = torch.randint(0, 5, (2,)).tolist()
    return padded[..., dy: dy + x.shape[-2], dx: dx + x.shape[-1]]


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), 1024):
        logits = model(images[start: start + 1024].to(device))
        correct += (logits.argmax(1).cpu() == labels[start: start + 1024]).sum().item()
    return 100.0 * correct / len(images)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    spec = ImageSpec(**VIT_MINI_IMAGE)
    data = {}
    for split, is_train in (("train", True), ("test", False)):
        images, labels = load_fashion_mnist(is_train, Path(args.data_dir), Path(args.debian_dir))
        images, labels = images[: args.limit], labels[: args.limit]
        data[split] = (to_backbone_input(images, spec), labels)
    model = create_vit_mini(None, architecture(args)).to(device)
    loader = DataLoader(TensorDataset(*data["train"]), batch_size=args.batch_size, shuffle=True, drop_last=True)
    steps = args.epochs * max(len(loader), 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = max(steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps))))
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = augment(x.to(device)), y.to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f}", flush=True)
    train_s = time.time() - start
    return {"model": model, "test_acc": accuracy(model, *data["test"], device), "train_s": train_s, "device": str(device),
            "n_train": len(data["train"][1]), "n_test": len(data["test"][1])}


def write_checkpoint(model: torch.nn.Module, out: Path, card: dict) -> None:
    """Write weights and card atomically (temporary names, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    partial = out.with_suffix(".partial")
    save_file(state, str(partial))
    partial.replace(out)
    card_path = out.with_suffix(".json")
    card_path.with_suffix(".json.partial").write_text(json.dumps(card, indent=2) + "\n")
    card_path.with_suffix(".json.partial").replace(card_path)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    outcome = train(args)
    model = outcome.pop("model")
    card = {
        "name": "vit-mini",
        "architecture": {"timm_model": "vit_tiny_patch16_224", **architecture(args)},
        "image": VIT_MINI_IMAGE,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretraining": {"dataset": "Fashion-MNIST train", "epochs": args.epochs, "batch_size": args.batch_size,
                        "optimizer": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                        "schedule": "linear warm-up (5% of steps) then cosine", "label_smoothing": args.label_smoothing,
                        "augmentation": "horizontal flip, shift up to 2 px", "seed": args.seed, "limit": args.limit},
        "fashion_mnist_test_acc": round(outcome["test_acc"], 2),
        "trained_on": {"device": outcome["device"], "seconds": round(outcome["train_s"], 1),
                       "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        "n_train": outcome["n_train"], "n_test": outcome["n_test"],
        "command": "python -m benchmark.pretrain " + " ".join(argv),
    }
    write_checkpoint(model, Path(args.out), card)
    print(f"Fashion-MNIST test accuracy {outcome['test_acc']:.2f}% -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
