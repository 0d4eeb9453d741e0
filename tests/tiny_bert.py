"""A tiny random BERT (hidden 32, 4 layers) and WordPiece tokenizer saved to a folder, for offline tests."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from models.text_encoder import build_random_bert

# words of typical remote-sensing captions; anything else still tokenises into letter pieces
TEST_WORDS = (
    "a an the there is are it of with and in on near some many two three farm farmland field fields "
    "green trees tree road roads building buildings house houses river water beach sea parking lot "
    "cars car plane planes airport runway white red small large piece dense residential area"
).split()


def save_tiny_bert(out_dir: str | Path, words: Sequence[str] = TEST_WORDS, num_layers: int = 4, seed: int = 0) -> Path:
    """Build and save the tiny model; returns the folder (usable as --model)."""
    return build_random_bert(out_dir, words, hidden_size=32, num_layers=num_layers, num_heads=2,
                             intermediate_size=64, max_position_embeddings=128, seed=seed)
