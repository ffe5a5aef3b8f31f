"""Train bitedge's bundled demo model: a small BiT on scikit-learn's handwritten digits.

The digits (1,797 8x8 grayscale images, 10 classes) ship with scikit-learn, so nothing is downloaded. They
are written as 32x32 PNG files in ImageNet-style folders (class subfolder = label), split with a fixed seed
into a held-out evaluation split, a calibration split and the training images; the model reads them
through its own `BitImageProcessor` (resize to 64, crop 64, mean = std = 0.5), exactly as bitedge will.

The network is a real BiT: pre-activation ResNetV2 units, GroupNorm (8 groups), weight-standardized convs,
BiT's stem; one unit per stage, widths 32 / 64-128-128-256 (~0.17 M parameters). Training uses a random
affine augmentation (rotation, scale, shift) and brightness/contrast jitter, AdamW and a cosine schedule;
seeds are fixed. Two CPU cores: a few minutes.

    python benchmarks/train_demo_model.py                 # rewrites bitedge/demo and the results files

Outputs: ``bitedge/demo/{config.json, preprocessor_config.json, model.safetensors}``, the split folders
``bitedge/demo/{calibration,eval}/<digit>/*.png`` (shipped) and ``benchmarks/results/demo_model.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from bitedge import BitConfig, BitForImageClassification, BitImageProcessor
from bitedge.bench.protocol import machine_info

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bitedge" / "demo"
RESULTS = ROOT / "benchmarks" / "results"
SEED = 0
EVAL_PER_CLASS, CALIBRATION_PER_CLASS = 40, 20
LABELS = [str(d) for d in range(10)]


def demo_config() -> BitConfig:
    return BitConfig(
        embedding_size=32,
        hidden_sizes=[64, 128, 128, 256],
        depths=[1, 1, 1, 1],
        num_groups=8,
        id2label=dict(enumerate(LABELS)),
        architectures=["BitForImageClassification"],
    )


def demo_processor() -> BitImageProcessor:
    return BitImageProcessor(
        size={"shortest_edge": 64},
        resample=2,
        crop_size={"height": 64, "width": 64},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )


def write_splits(work: Path) -> dict[str, list[tuple[Path, int]]]:
    """Digits -> 32x32 PNGs in eval/, calibration/ (shipped) and train/ (not shipped) class folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SEED)
    splits: dict[str, list[tuple[Path, int]]] = {"eval": [], "calibration": [], "train": []}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        parts = {
            "eval": indices[:EVAL_PER_CLASS],
            "calibration": indices[EVAL_PER_CLASS : EVAL_PER_CLASS + CALIBRATION_PER_CLASS],
            "train": indices[EVAL_PER_CLASS:],  # calibration images are training images, as in practice
        }
        for split, chosen in parts.items():
            folder = (DEMO if split != "train" else work) / split / LABELS[label]
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
                image = Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.BILINEAR)
                path = folder / f"digit_{index:04d}.png"
                image.save(path, optimize=True)
                splits[split].append((path, label))
    return splits


def load(split: list[tuple[Path, int]], processor: BitImageProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = processor([p for p, _ in split], return_tensors="pt")["pixel_values"]
    return pixels, torch.tensor([label for _, label in split])


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine (±12°, scale 0.85-1.15, shift ±10%) and brightness/contrast jitter, on (N, 3, H, W)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(12)
    scale = 0.85 + torch.rand(n, generator=gen) * 0.3
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = -1.0  # black, normalized
    out = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
    contrast = 0.7 + torch.rand(n, 1, 1, 1, generator=gen) * 0.6
    brightness = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.2
    return ((out - background) * contrast + background + brightness).clamp(-1, 1)


def accuracy(model: BitForImageClassification, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk).logits.argmax(1) for chunk in x.split(256)])
    return float((predictions == y).float().mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    for split in ("eval", "calibration"):
        shutil.rmtree(DEMO / split, ignore_errors=True)
    work = ROOT / "build" / "demo-train"
    shutil.rmtree(work, ignore_errors=True)
    splits = write_splits(work)
    processor = demo_processor()
    x_train, y_train = load(splits["train"], processor)
    x_eval, y_eval = load(splits["eval"], processor)
    model = BitForImageClassification(demo_config())
    model.init_weights(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * math.ceil(len(x_train) / args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(SEED)
    history, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        losses = []
        for batch in order.split(args.batch):
            loss = model(augment(x_train[batch], gen), labels=y_train[batch]).loss
            assert loss is not None
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "eval_accuracy": accuracy(model, x_eval, y_eval)}
        history.append(entry)
        print(f"epoch {entry['epoch']:3d}  loss {entry['loss']:.4f}  eval top-1 {entry['eval_accuracy']:.2f}%")
    seconds = time.perf_counter() - start
    model.eval()
    model.save_pretrained(DEMO)
    processor.save_pretrained(DEMO)
    shutil.rmtree(work, ignore_errors=True)
    final = accuracy(model, x_eval, y_eval)
    result = {
        "model": "bitedge/demo: BiT (pre-activation, GroupNorm 8 groups, weight standardization), depths 1-1-1-1",
        "parameters": model.num_parameters(),
        "dataset": "scikit-learn load_digits, 8x8 -> 32x32 PNG -> processor 64x64",
        "splits": {k: len(v) for k, v in splits.items()},
        "eval_top1_accuracy": final,
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "seed": SEED,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "machine": machine_info(),
        "history": history,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_model.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# bitedge/demo: a small BiT trained on scikit-learn's digits",
        "",
        "| parameters | train / calibration / eval images | epochs | train time | eval top-1 |",
        "|---|---|---|---|---|",
        f"| {result['parameters']:,} | {len(splits['train'])} / {len(splits['calibration'])} / "
        f"{len(splits['eval'])} | {args.epochs} | {seconds:.0f} s on {result['machine']['cores']} cores | "
        f"{final:.2f}% |",
        "",
        "Reproduce: `python benchmarks/train_demo_model.py` (seeded; rewrites bitedge/demo).",
        "",
    ]
    (RESULTS / "demo_model.md").write_text("\n".join(md))
    print(f"eval top-1 {final:.2f}% on {len(splits['eval'])} held-out images; {seconds:.0f} s")


if __name__ == "__main__":
    main()
