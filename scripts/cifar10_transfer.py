#!/usr/bin/env python3
"""Move CIFAR-10 to a machine that receives only a small working tree per command.

    python scripts/cifar10_transfer.py pack --data-dir /path/to/cifar10 --out .transfer
        -> .transfer/cifar10-part1of2.tar, cifar10-part2of2.tar (lossless, about 50 MiB each)
    python scripts/cifar10_transfer.py unpack .transfer/cifar10-part1of2.tar --to /tmp/c
    python scripts/cifar10_transfer.py unpack .transfer/cifar10-part2of2.tar --to /tmp/c --complete
        -> /tmp/c/cifar-10-batches-py: each batch verified by the SHA-256 of its pixels and
           labels; "complete and verified" once every part has been unpacked there (with
           --complete, exit status 3 if it is not)

Needs numpy and Pillow (with WebP, as in Pillow's PyPI wheels); run from the repository
root (it imports eae from src/). See benchmarks/README.md for the GPU command sequence.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from eae.data.cifar10 import DatasetError  # noqa: E402
from eae.data.transfer import pack, unpack  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="write the parts")
    a.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (default: eae's search)")
    a.add_argument("--out", required=True, help="new or empty folder for the parts")
    a.add_argument("--max-mib", type=float, default=60.0, help="largest part in MiB (default: 60)")
    a.add_argument("--effort", type=int, default=4, choices=range(7), help="WebP effort 0..6 (default: 4)")
    u = sub.add_parser("unpack", help="decode, verify and write the batches of some parts")
    u.add_argument("parts", nargs="+")
    u.add_argument("--to", required=True, help="folder to hold cifar-10-batches-py")
    u.add_argument("--complete", action="store_true",
                   help="exit with status 3 unless the dataset is complete and verified afterwards")
    args = p.parse_args(argv)
    try:
        if args.cmd == "pack":
            for path in pack(args.data_dir, args.out, max_mib=args.max_mib, effort=args.effort):
                print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
            return 0
        complete = unpack(args.parts, args.to)
        return 3 if args.complete and not complete else 0
    except (DatasetError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
