"""Images/s of the ResNet18 encoder through ``encode_images``, three ways, in one run.

Compares eval mode under ``torch.inference_mode`` in the contiguous memory format, the
``--original-quirks`` path (training-mode batch norm under ``torch.no_grad``) and eval mode in the
channels_last memory format that images_augment.py uses, on random 224x224 batches (no image decoding: this measures
the encoder). Prints measured
numbers and their ratios. Run it alone: other load on the machine skews it.

    python benchmarks/bench_image_encoder.py --batch-size 64 --batches 3
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per variant (after one warm-up batch)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds; the best round counts")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    return parser


def main(args: argparse.Namespace) -> None:
    import torch

    from models.image_encoder import build_image_encoder, encode_images
    from utils.runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights are fine for timing
        model, _ = build_image_encoder("none")
    n = args.batch_size * args.batches
    batches = [(torch.rand(args.batch_size, 3, 224, 224), torch.arange(i * args.batch_size, (i + 1) * args.batch_size))
               for i in range(args.batches)]
    warm = [(batches[0][0], torch.arange(args.batch_size))]

    variants = {
        "eval + inference_mode, contiguous": dict(train_mode=False, channels_last=False),
        "train-mode BN + no_grad, contiguous (quirks)": dict(train_mode=True, channels_last=False),
        "eval + inference_mode, channels_last (used)": dict(train_mode=False, channels_last=True),
    }
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {args.batches} batches x best of {args.repeats}")
    rates = {}
    for name, kw in variants.items():
        model = model.to(memory_format=torch.contiguous_format)
        encode_images(model, warm, device, args.batch_size, progress=False, **kw)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            encode_images(model, batches, device, n, progress=False, **kw)  # copies back to CPU: synchronises
            best = min(best, time.perf_counter() - start)
        rates[name] = n / best
        print(f"{name:48s} {rates[name]:8.1f} images/s  ({best / args.batches * 1e3:.0f} ms/batch)")
    base = rates["eval + inference_mode, contiguous"]
    for name, rate in rates.items():
        print(f"ratio {name:44s} / contiguous eval = {rate / base:.2f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
