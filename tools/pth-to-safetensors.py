#!/usr/bin/env python3
"""Converts a PyTorch checkpoint (.pth / .pt, as torchvision and most repositories publish
weights) to a safetensors state dict that `kaleido pretrain --init` (model.init) reads.

    python3 tools/pth-to-safetensors.py resnet50-0676ba61.pth resnet50.safetensors
    python3 tools/pth-to-safetensors.py swinT_checkpoint.torch omnivore_swinT.safetensors

It accepts a bare state dict or one nested under a key (`--key`; by default the first of
`state_dict`, `model`, `model_state`, `trunk` that exists). Omnivore's releases hold two,
`trunk` and `heads`: both are written, as `trunk.*` and `heads.*` (an `OmnivoreModel`'s state
dict names, which kaleido translates to its own; `--key trunk` keeps the trunk alone). It drops
a `module.` prefix left by DataParallel/DDP (and any `--strip-prefix`), keeps float and integer
tensors as they are (contiguous, on the CPU) and prints how many tensors it wrote and their
total size. The names stay torchvision's/timm's (or Omnivore's): kaleido checks them against
its model when it loads the file, and `model.init_ignore` skips a classifier (`fc.`, `head.`,
`heads.`).

Needs torch and safetensors (pip install torch safetensors). Loading a .pth runs pickle: only
convert files from sources you trust (the script uses torch.load(weights_only=True)).
"""
import argparse
import sys

import torch
from safetensors.torch import save_file

NESTED_KEYS = ("state_dict", "model", "model_state", "trunk")
# facebookresearch/omnivore's checkpoints: {"trunk": state dict, "heads": state dict}.
OMNIVORE_PARTS = ("trunk", "heads")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the .pth / .pt file")
    parser.add_argument("destination", help="the .safetensors file to write")
    parser.add_argument("--key", help="the key holding the state dict inside the checkpoint")
    parser.add_argument("--strip-prefix", action="append", default=[], help="a name prefix to remove (repeatable)")
    args = parser.parse_args()

    checkpoint = torch.load(args.source, map_location="cpu", weights_only=True)
    state = checkpoint
    if args.key:
        if args.key not in checkpoint:
            sys.exit(f"{args.source}: no key '{args.key}' (keys: {', '.join(map(str, checkpoint))})")
        state = checkpoint[args.key]
    elif isinstance(checkpoint, dict) and all(isinstance(checkpoint.get(k), dict) for k in OMNIVORE_PARTS):
        state = {f"{part}.{name}": value for part in OMNIVORE_PARTS for name, value in checkpoint[part].items()}
    elif isinstance(checkpoint, dict) and not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        found = next((k for k in NESTED_KEYS if k in checkpoint), None)
        if found is None:
            sys.exit(f"{args.source}: no tensors at the top level and none of {NESTED_KEYS}; give --key")
        state = checkpoint[found]

    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ["module."] + args.strip_prefix:
            if name.startswith(prefix):
                name = name[len(prefix):]
        tensors[name] = value.detach().cpu().contiguous()
    if not tensors:
        sys.exit(f"{args.source}: no tensors found")
    save_file(tensors, args.destination)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    print(f"wrote {len(tensors)} tensors, {total / 1e6:.1f} MB, to {args.destination}")


if __name__ == "__main__":
    main()
