"""Instance-level recall of hash codes: R@1, R@5, R@10 and their mean (mR), I->T and T->I.

An image's relevant items are its own captions (I->T: a hit at K when ANY of them is among the first K);
a caption's relevant item is its own image (T->I). Relevance comes from ids: a database item is relevant
to a query when their ids are equal (the image index of a caption, the index of an image).

Two exact forms of every figure (docs/datasets.md):

- ties by index: items ranked by (Hamming distance, database index), as the class-level metrics;
- tie-aware: the expected value when the items at one distance are ordered uniformly at random.
  Only the distance d* of the nearest relevant item matters: with a items strictly nearer (none of
  them relevant) and t items at d*, r of them relevant, the first relevant item's rank is a + P, P the
  first position of r marked items in a random order of t, so
  P(hit at K) = P(P <= K - a) = 1 - C(t - r, k) / C(t, k), k = K - a (0 when k <= 0, 1 when k >= t);
  for r = 1 this is clamp((K - a) / t, 0, 1).

Both come from the counting engine (utils.retrieval.counting): counts per distance and the ranks of the
few items before rank max(K); nothing is sorted and no query x database matrix is built.
"""
from __future__ import annotations

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.counting import Plan, count_chunks
from utils.retrieval.hamming import as_code_words
from utils.retrieval.labels import as_labels, paired

RECALL_KS = (1, 5, 10)


def hit_probability(k: np.ndarray, t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """P(the first of r marked items among t randomly ordered items is at position <= k), elementwise:
    1 - prod_{i<k} (t - r - i) / (t - i); 0 for k <= 0, 1 for k >= t."""
    k, t, r = (np.asarray(x, dtype=np.int64) for x in (k, t, r))
    k, t, r = np.broadcast_arrays(k, t, r)
    miss = np.ones(k.shape, dtype=np.float64)
    kk = np.clip(k, 0, t)
    for i in range(int(kk.max(initial=0))):
        active = i < kk
        factor = np.clip((t - r - i) / np.maximum(t - i, 1), 0.0, 1.0)
        miss = np.where(active, miss * factor, miss)
    return np.where(k <= 0, 0.0, 1.0 - miss)


def recall_at(q, db, q_ids, db_ids, ks=RECALL_KS, memory_gb: float = 1.0, bits: int | None = None) -> dict:
    """R@K of one direction in both forms: {"index": {K: value}, "tie_aware": {K: value}, "no_relevant": n}.

    ``q``/``db`` codes in any form ``as_code_words`` accepts; ``q_ids``/``db_ids`` integer ids (relevant =
    equal ids). Values are fractions of queries (0..1); a query with no relevant item counts 0.
    By the counting engine (ids as class codes): the relevant items within the first K in (distance,
    index) order give the first form; the counts per distance give a, t and r of the second."""
    qw = as_code_words(q, bits, "query codes")
    dw = as_code_words(db, bits, "database codes")
    q_ids, db_ids = np.asarray(q_ids).reshape(-1), np.asarray(db_ids).reshape(-1)
    if len(q_ids) != len(qw) or len(db_ids) != len(dw):
        raise DUCHError(f"recall: {len(qw)} query codes with {len(q_ids)} ids, "
                        f"{len(dw)} database codes with {len(db_ids)} ids")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise DUCHError(f"recall cut-offs must be positive integers, got {ks}")
    ql, dl = paired(as_labels(q_ids, "query ids"), as_labels(db_ids, "database ids"))
    plan = Plan.make(ks, (), len(dw))
    hits_index = np.zeros(len(ks), dtype=np.int64)
    per_query_tie = np.zeros((len(qw), len(ks)), dtype=np.float64)  # summed once at the end: chunking-independent
    none = 0
    for start, stop, hist, _, sums in count_chunks(qw, dw, ql, dl, plan, memory_gb=memory_gb):
        n_all, n_rel = hist.sum(axis=2), hist[:, :, 1]
        has = n_rel.sum(axis=1) > 0
        none += int((~has).sum())
        rows, nearest = np.arange(stop - start), np.argmax(n_rel > 0, axis=1)  # d*: the nearest relevant distance
        a = (np.cumsum(n_all, axis=1) - n_all)[rows, nearest]
        t, r = n_all[rows, nearest], n_rel[rows, nearest]
        hits_index += ((sums.cut_hits > 0) & has[:, None]).sum(axis=0)
        for i, k in enumerate(ks):
            per_query_tie[start:stop, i] = np.where(has, hit_probability(k - a, t, r), 0.0)
    n = max(len(qw), 1)
    return {
        "index": {k: hits_index[i] / n for i, k in enumerate(ks)},
        "tie_aware": {k: float(per_query_tie[:, i].sum() / n) for i, k in enumerate(ks)},
        "no_relevant": none,
    }


def instance_recall(img_codes, txt_codes, txt_image, ks=RECALL_KS, memory_gb: float = 1.0,
                    bits: int | None = None) -> dict:
    """I->T and T->I recall within a set of images and their captions, in metrics.json's layout:
    {"index": {"i2t": {"r@1": .., ..}, "t2i": {..}, "mr": ..}, "tie_aware": {..}, "n_images", "n_captions"}.

    ``txt_image[c]`` is the row in ``img_codes`` of caption c's image; values are percentages (0..100),
    as retrieval papers print them; mR is the mean of the six recalls."""
    img = as_code_words(img_codes, bits, "image codes")
    txt = as_code_words(txt_codes, bits, "caption codes")
    owner = np.asarray(txt_image).reshape(-1)
    if owner.dtype.kind not in "iu":
        raise DUCHError(f"caption-to-image rows must be integers, got dtype {owner.dtype}")
    if len(owner) != len(txt):
        raise DUCHError(f"{len(txt)} caption codes but {len(owner)} caption-to-image rows")
    if len(owner) and (owner.min() < 0 or owner.max() >= len(img)):
        raise DUCHError(f"caption-to-image rows must lie in 0..{len(img) - 1} (the image codes), "
                        f"found {int(owner.min())}..{int(owner.max())}")
    image_ids = np.arange(len(img))
    out: dict = {"index": {}, "tie_aware": {}}
    directions = {"i2t": (img, txt, image_ids, owner), "t2i": (txt, img, owner, image_ids)}
    for name, (q, db, q_ids, db_ids) in directions.items():
        result = recall_at(q, db, q_ids, db_ids, ks, memory_gb)
        for form in ("index", "tie_aware"):
            out[form][name] = {f"r@{k}": 100.0 * float(v) for k, v in result[form].items()}
    for form in ("index", "tie_aware"):
        values = [v for name in ("i2t", "t2i") for v in out[form][name].values()]
        out[form]["mr"] = float(np.mean(values))
    out["n_images"], out["n_captions"] = len(img), len(txt)
    return out


def format_recall_table(recall: dict) -> str:
    """Console lines: R@1/5/10 per direction and mR, ties by index and tie-aware."""
    ks = list(recall["index"]["i2t"])
    header = f"{'recall %':22s}" + "".join(f"{k.upper():>8s}" for k in ks)
    lines = [header]
    for form, title in (("index", "ties by index"), ("tie_aware", "tie-aware")):
        for name, arrow in (("i2t", "I->T"), ("t2i", "T->I")):
            lines.append(f"{arrow + ' ' + title:22s}" + "".join(f"{recall[form][name][k]:8.2f}" for k in ks))
        lines.append(f"{'mR ' + title:22s}{recall[form]['mr']:8.2f}")
    return "\n".join(lines)
