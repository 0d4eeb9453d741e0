"""Train / query / database split and per-image caption choice, exactly as the original release.

The original used Python's ``random`` module re-seeded at fixed points; the same calls in the same
order give the same indices for the same seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from configs.datasets import CAPTIONS_PER_IMAGE


@dataclass
class Split:
    train: list[int]
    query: list[int]
    db: list[int]
    train_captions: list[int]  # caption row (5*j + i) used for each train image
    query_captions: list[int]
    db_captions: list[int]

    def to_json(self) -> dict:
        return {k: list(map(int, v)) for k, v in self.__dict__.items()}


def split_indices(n_images: int, seed: int = 42, train_share: float = 0.5, query_share: float = 0.2):
    """train = sorted(sample(range(N), int(0.5 N))); query = sorted(sample(rest, int(0.2 |rest|)))."""
    random.seed(seed)
    train = sorted(random.sample(range(n_images), int(train_share * n_images)))
    train_set = set(train)
    rest = [i for i in range(n_images) if i not in train_set]
    query = sorted(random.sample(rest, int(query_share * len(rest))))
    query_set = set(query)
    db = [i for i in rest if i not in query_set]
    return train, query, db


def choose_captions(images: list[int], seed: int = 42) -> list[int]:
    """Re-seed, then pick one of the 5 caption rows of each image, in order."""
    random.seed(seed)
    return [CAPTIONS_PER_IMAGE * j + random.sample(range(CAPTIONS_PER_IMAGE), 1)[0] for j in images]


def make_split(n_images: int, seed: int = 42) -> Split:
    train, query, db = split_indices(n_images, seed)
    return Split(train, query, db, choose_captions(train, seed), choose_captions(query, seed),
                 choose_captions(db, seed))
