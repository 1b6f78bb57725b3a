"""ImageNet pipeline throughput: images per second for loading alone and for
training ResNet-50 per method, and whether the loader keeps up with `standard`.

Three measurements, each on the folder(s) given:
1. loading: the training loader (worker processes decode JPEGs, RandomResizedCrop +
   flip at --size, uint8 to the device, float there), no model;
2. compute: training steps of --arch on batches already on the device (the ceiling
   the loader must feed);
3. end to end: training steps fed by the loader.
`standard` is loader-bound when end to end is clearly below compute, and loading alone
is below compute.

A synthetic folder of ImageNet-sized JPEGs (300-500 x 250-450 px, about 95 KB each;
ImageNet's average is about 400x350 and 110 KB) is made with --make-synthetic; the real Tiny-ImageNet images (64x64) of
../shared/data are used in their ImageFolder layout.

GPU machine (16 cores):
    PYTHONPATH=src python benchmarks/imagenet_throughput.py --make-synthetic /tmp/synth --images 4000 \\
        --folder /tmp/synth --folder ../shared/data/tiny-imagenet-200-val-subset --workers 16 --out $OUT/inet
CPU sketch (this container): --arch resnet50 --batch-size 16 --steps 3 --workers 2 --images 400

Writes OUT/results.json and OUT/results.md with the device, the command and the commit.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eae.config import TrainConfig  # noqa: E402
from eae.data.imagefolder import MEAN, STD, FolderLoader, scan_folder  # noqa: E402
from eae.methods import create_method  # noqa: E402
from eae.models import create_model  # noqa: E402
from eae.utils import Timer, device_name, git_commit, resolve_device  # noqa: E402


def make_synthetic(root: Path, images: int, classes: int = 10, seed: int = 0) -> None:
    """ImageNet-like JPEGs: smooth colour fields plus texture, sizes drawn around 400x350."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        d = root / f"class{i % classes:03d}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(300, 500)), int(rng.integers(250, 450))
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-56, 57, (h, w, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(d / f"img{i:06d}.JPEG", quality=90)


def batches(loader, steps):
    """Yield `steps` batches, cycling over epochs."""
    n = 0
    while n < steps:
        for xy in loader:
            yield xy
            n += 1
            if n == steps:
                return


def loading(samples, args, device) -> dict:
    loader = FolderLoader(samples, args.batch_size, args.size, device=device, workers=args.workers,
                          channels_last=True)
    it = batches(loader, args.load_steps + 2)
    next(it), next(it)  # workers started and warm
    t0 = time.perf_counter()
    n = 0
    for x, _ in it:
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_s": n / (time.perf_counter() - t0), "images": n}


def training(method_name, samples, args, device, fed: bool) -> dict:
    cfg = TrainConfig(method=method_name, eps=args.eps, arch=args.arch, device=str(device))
    model = create_model(args.arch, num_classes=1000, mean=MEAN, std=STD).to(device).to(
        memory_format=torch.channels_last)
    model.train()
    method = create_method(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    auto = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    if fed:
        loader = FolderLoader(samples, args.batch_size, args.size, device=device, workers=args.workers,
                              channels_last=True)
        source = batches(loader, args.steps + args.warmup)
    else:
        x = torch.rand(args.batch_size, 3, args.size, args.size, device=device).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (args.batch_size,), device=device)
        source = iter([(x, y)] * (args.steps + args.warmup))

    def step(x, y):
        with auto:
            out = method.step(model, x, y, 0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step(*next(source))
    n = 0
    with Timer(device) as t:
        for x, y in source:
            step(x, y)
            n += len(y)
    return {"images_per_s": n / t.seconds(), "images": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--folder", action="append", default=[], help="ImageFolder root(s) (class folders inside)")
    ap.add_argument("--make-synthetic", default=None, help="create a synthetic folder here first")
    ap.add_argument("--images", type=int, default=4000, help="--make-synthetic: number of JPEGs")
    ap.add_argument("--methods", default="standard,fgsm_rs,eae")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--load-steps", type=int, default=30, help="timed loader batches")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.make_synthetic:
        t0 = time.perf_counter()
        make_synthetic(Path(args.make_synthetic), args.images)
        print(f"made {args.images} JPEGs in {time.perf_counter() - t0:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"device": device_name(device), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
               "commit": git_commit(), "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
               "arch": args.arch, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
               "folders": []}
    for folder in args.folder:
        samples = scan_folder(folder).samples
        kb = np.mean([os.path.getsize(p) for p, _ in samples[:500]]) / 1024
        entry = {"folder": folder, "images": len(samples), "mean_kb": round(kb, 1),
                 "loading": loading(samples, args, device), "methods": {}}
        print(f"{folder}: loading {entry['loading']['images_per_s']:.0f} img/s", flush=True)
        for m in args.methods.split(","):
            r = {"compute": training(m, samples, args, device, fed=False),
                 "end_to_end": training(m, samples, args, device, fed=True)}
            entry["methods"][m] = r
            print(f"  {m}: compute {r['compute']['images_per_s']:.1f} img/s, end to end "
                  f"{r['end_to_end']['images_per_s']:.1f} img/s", flush=True)
        results["folders"].append(entry)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# ImageNet pipeline throughput: {results['device']}, {results['cpu_cores']} CPU cores", "",
             f"`{results['command']}` (commit {results['commit']}, torch {results['torch']}); {args.arch} at "
             f"{args.size} px, batch {args.batch_size}, {args.workers} decoding workers, {args.steps} timed steps.",
             "", "| folder | images (mean KB) | loading img/s | method | compute img/s | end-to-end img/s | "
             "loader-bound |", "|---|---|---:|---|---:|---:|---|"]
    for e in results["folders"]:
        for m, r in e["methods"].items():
            c, f = r["compute"]["images_per_s"], r["end_to_end"]["images_per_s"]
            bound = "yes" if e["loading"]["images_per_s"] < c and f < 0.9 * c else "no"
            lines.append(f"| {e['folder']} | {e['images']} ({e['mean_kb']}) | {e['loading']['images_per_s']:.0f} | "
                         f"{m} | {c:.1f} | {f:.1f} | {bound} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
