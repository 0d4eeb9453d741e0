"""Guards of the counting engine that need no clock: no sort anywhere on its path, and working memory that
follows the chunk, not the number of query x database pairs."""
import importlib.util
import tracemalloc

import numpy as np
import pytest

from utils.retrieval.evaluation import evaluate_directions
from utils.retrieval.hamming import as_code_words
from utils.retrieval.recall import instance_recall

HAS_NUMBA = importlib.util.find_spec("numba") is not None
SORTS = ("sort", "argsort", "lexsort", "partition", "argpartition", "unique")


def class_structured(rng, labels, bits, flip=0.15, classes=32):
    """Codes near their class's centre; the centres are fixed by ``bits``, so queries and database share them."""
    centres = np.where(np.random.default_rng(bits).random((classes, bits)) > 0.5, 1, -1).astype(np.int8)
    codes = centres[labels]
    return np.where(rng.random(codes.shape) < flip, -codes, codes)


def every_family(q, db, ql, dl, img, txt, owner, **kwargs):
    """Every metric the project reports: mAP@K (both definitions and tie-aware), P@K, PR, and recall."""
    class_level = evaluate_directions({"q2db": (q, db)}, ql, dl, map_ks=(20, 10, 100), with_curves=True, **kwargs)
    return class_level, instance_recall(img, txt, owner)


@pytest.fixture
def no_sorting(monkeypatch):
    def refuse(name):
        def sort(*args, **kwargs):
            raise AssertionError(f"np.{name} called on the engine's path")
        return sort

    for name in SORTS:
        monkeypatch.setattr(np, name, refuse(name))


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
def test_no_sort_on_the_engines_path(kernel, no_sorting, monkeypatch):
    if kernel == "numpy":
        from utils.retrieval import counting

        monkeypatch.setattr(counting, "_numba_module", lambda: None)
    rng = np.random.default_rng(0)
    ql, dl = rng.integers(0, 5, 40), rng.integers(0, 5, 600)
    img_owner = np.repeat(np.arange(30), 5)
    img = class_structured(rng, np.arange(30) % 4, 32)
    txt = class_structured(rng, img_owner % 4, 32)
    class_level, recall = every_family(class_structured(rng, ql, 32), class_structured(rng, dl, 32), ql, dl,
                                       img, txt, img_owner)
    assert 0 < class_level["map_cut@20"]["q2db"] <= 1 and 0 < class_level["map_tie_aware"]["q2db"] <= 1
    assert 0 < recall["tie_aware"]["mr"] <= 100


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_memory_follows_the_chunk_not_the_pairs():
    """2,000 x 200,000 codes (4e8 pairs: a bit per pair would be 50 MB) with every class-level metric, and
    recall over 2,000 images and 10,000 captions, at the default memory budget: the peak of each stays within
    the per-query counts of one chunk plus a few words per database item."""
    from utils.retrieval.counting import MAX_CHUNK_QUERIES

    rng = np.random.default_rng(1)
    n_q, n_db, bits = 2_000, 200_000, 64
    ql, dl = rng.integers(0, 21, n_q), rng.integers(0, 21, n_db)
    q = as_code_words(class_structured(rng, ql, bits))
    db = as_code_words(class_structured(rng, dl, bits))
    owner = np.repeat(np.arange(n_q), 5)
    txt = as_code_words(class_structured(rng, ql[owner], bits))
    runs = {
        "class-level": lambda: evaluate_directions({"q2db": (q, db)}, ql, dl, map_ks=(20, 10, 100), with_curves=True),
        "recall": lambda: instance_recall(q, txt, owner),
    }
    per_query = (bits + 1) * 8 * 10  # counts, cumulative sums and the tie-aware terms of a query
    bound = per_query * MAX_CHUNK_QUERIES + 32 * n_db + (4 << 20)  # + harmonic numbers and labels per item
    assert bound < n_q * n_db / 8  # the bound could not hold a bit per pair
    for name, run in runs.items():
        run()  # modules and compiled kernels loaded before measuring
        tracemalloc.start()
        try:
            result = run()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < bound, f"{name}: peak {peak / 2**20:.1f} MB, bound {bound / 2**20:.1f} MB"
        assert result  # something was scored
