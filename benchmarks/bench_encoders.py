"""What each encoder costs per image and per caption, against the paper's ResNet18 and BERT, in one run.

The networks are built at their real sizes with random weights (the cost of a forward pass does not depend
on the weights, and nothing is downloaded): ResNet18 (the paper's), ResNet50, ViT-B/16 (torchvision), the
vision tower of CLIP ViT-B/32 and of SigLIP base patch16-224 (Hugging Face configurations of those shapes);
BERT-base pooled as the paper does, and the CLIP and SigLIP text towers. Batches of random 224 x 224 images
(no decoding) and of real UCM-length captions. Prints ms per item and the ratio to the paper's encoder. Run it
alone: other load on the machine skews it.

    python benchmarks/bench_encoders.py --device cpu
    python benchmarks/bench_encoders.py --device cuda --batch-size 64
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CAPTIONS = ("many buildings and some green trees are around a playground",
            "a large number of cars are parked in the parking lot next to the road",
            "it is a piece of cropland", "two tennis courts are surrounded by some plants and a road")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2, help="timed batches (after one warm-up batch)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the encoders to time (default: all)")
    return parser


def _best_time(fn, batches: int) -> float:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(batches):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def image_encoders(device):
    """{name: module taking (B, 3, 224, 224)}."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, SiglipVisionConfig, SiglipVisionModel

    from models.image_encoder import build_image_backbone

    out = {}
    for name in ("resnet18", "resnet50", "vit_b_16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out[name] = build_image_backbone(name, "none").model
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32, projection_dim=512))
    out["clip-vit-b-32 vision"] = lambda x, m=clip: m(pixel_values=x).image_embeds
    siglip = SiglipVisionModel(SiglipVisionConfig(patch_size=16, image_size=224))
    out["siglip-base-patch16-224 vision"] = lambda x, m=siglip: m(pixel_values=x).pooler_output
    for model in (clip, siglip, *[v for v in out.values() if hasattr(v, "eval")]):
        model.eval().to(device)
    return out


def text_encoders(device, root: Path):
    """{name: function(list of captions) -> vectors}: BERT-base as the paper pools it, CLIP and SigLIP towers."""
    from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    from models.clip_encoder import ClipCheckpoint, embed_texts
    from models.text_encoder import TextModel, build_random_bert, embed_captions, load_text_model

    bert_dir = build_random_bert(root / "bert", words=" ".join(CAPTIONS).split(), hidden_size=768, num_layers=12,
                                 num_heads=12, intermediate_size=3072)
    small = load_text_model(str(bert_dir), device)
    bert = TextModel(small.name, small.source, small.tokenizer, BertModel(BertConfig()).eval().to(device), device)
    clip_tok = _clip_tokenizer(root)
    clip = ClipCheckpoint("clip-vit-b-32", "random", CLIPModel(CLIPConfig()).eval().to(device), "clip",
                          tokenizer=clip_tok)
    siglip = ClipCheckpoint("siglip-base-patch16-224", "random",
                            SiglipModel(SiglipConfig()).eval().to(device), "siglip", tokenizer=clip_tok)
    return {
        "bert-base (paper pooling)": lambda texts: embed_captions(bert, texts, batch_size=len(texts), progress=False),
        "clip-vit-b-32 text": lambda texts: embed_texts(clip, texts, batch_size=len(texts)),
        "siglip-base text": lambda texts: embed_texts(siglip, texts, batch_size=len(texts)),
    }


def _clip_tokenizer(root: Path):
    """A byte-level tokenizer without merges (every word letter by letter: more tokens than the real one, so the
    text towers' figures are upper bounds)."""
    from transformers import AutoTokenizer

    from models.clip_encoder import build_random_clip

    return AutoTokenizer.from_pretrained(str(build_random_clip(root / "tokenizer")))


def main(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from utils.runtime import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"best of {args.batches} batches")
    images = torch.rand(args.batch_size, 3, 224, 224, device=device)
    rows = {}
    with torch.inference_mode():
        for name, model in image_encoders(device).items():
            if args.only and name not in args.only:
                continue
            seconds = _best_time(lambda m=model: m(images), args.batches)
            rows[("image", name)] = 1000 * seconds / args.batch_size
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch_size)]
    with tempfile.TemporaryDirectory() as root:
        for name, embed in text_encoders(device, Path(root)).items():
            if args.only and name not in args.only:
                continue
            seconds = _best_time(lambda e=embed: e(texts), args.batches)
            rows[("caption", name)] = 1000 * seconds / args.batch_size
    base = {"image": rows.get(("image", "resnet18")), "caption": rows.get(("caption", "bert-base (paper pooling)"))}
    print(f"{'modality':9s} {'encoder':32s} {'ms / item':>10s} {'x paper':>8s}")
    for (modality, name), ms in rows.items():
        ratio = f"{ms / base[modality]:.2f}" if base[modality] else "-"
        print(f"{modality:9s} {name:32s} {ms:10.2f} {ratio:>8s}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
