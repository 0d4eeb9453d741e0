"""Splits, losses and the training loop's bookkeeping."""
import math
import random

import pytest
import torch

from utils import losses
from utils.splits import choose_captions, make_split


def test_split_sizes_and_disjointness_ucm():
    s = make_split(2100, 42)
    assert (len(s.train), len(s.query), len(s.db)) == (1050, 210, 840)
    assert not set(s.train) & set(s.query) and not set(s.query) & set(s.db) and not set(s.train) & set(s.db)
    assert sorted(s.train + s.query + s.db) == list(range(2100))
    assert s.train == sorted(s.train) and s.query == sorted(s.query) and s.db == sorted(s.db)
    for images, rows in ((s.train, s.train_captions), (s.query, s.query_captions), (s.db, s.db_captions)):
        assert all(5 * j <= r < 5 * j + 5 for j, r in zip(images, rows))


def test_split_follows_the_original_random_calls():
    """Re-derive the split with the original's calls written out independently."""
    n = 300
    random.seed(42)
    train = sorted(random.sample(range(n), int(0.5 * n)))
    rest = sorted(set(range(n)) - set(train))
    query = sorted(random.sample(rest, int(0.2 * len(rest))))
    db = sorted(set(rest) - set(query))
    random.seed(42)
    query_caps = [5 * j + random.sample(range(5), 1)[0] for j in query]
    s = make_split(n, 42)
    assert (s.train, s.query, s.db, s.query_captions) == (train, query, db, query_caps)
    assert make_split(n, 7).train != s.train  # the seed matters
    assert choose_captions([0, 1, 2], 42) == choose_captions([0, 1, 2], 42)


def reference_ntxent(a, b, tau=1.0):
    """Row-by-row NT-Xent as SPEC section 3 writes it."""
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    n = a.shape[0]
    total = 0.0
    for k in range(2 * n):
        neg = max(sum(math.exp(float(z[k] @ z[l]) / tau) for l in range(2 * n)) - math.exp(1 / tau), 1e-6)
        pos = math.exp(float(an[k % n] @ bn[k % n]) / tau)
        total += -math.log(pos / (neg + 1e-6))
    return total


def test_ntxent_matches_reference():
    torch.manual_seed(0)
    a, b = torch.tanh(torch.randn(6, 8)), torch.tanh(torch.randn(6, 8))
    assert losses.ntxent(a, b).item() == pytest.approx(reference_ntxent(a, b), rel=1e-5)
    assert losses.ntxent(a, a).item() < losses.ntxent(a, b).item()  # matching pairs cost less


def test_quantization_and_bit_balance_are_sums():
    h = torch.tensor([[0.5, -0.5], [1.0, 1.0]])
    b = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert losses.quantization_loss(b, [h, h]).item() == pytest.approx(2 * (0.25 + 0.25))
    assert losses.bit_balance_loss([h]).item() == pytest.approx(0.0 + 4.0)


def test_discriminator_loss_penalises_gradient_norm():
    torch.manual_seed(0)
    from models.duch import Discriminator

    disc = Discriminator(8)
    real, fake = torch.randn(16, 8), torch.randn(16, 8)
    loss = losses.discriminator_loss(disc, real, fake)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in disc.parameters())
    assert losses.gradient_penalty(disc, real, fake).item() >= 0


def _trainer(demo_features, **overrides):
    from configs.train import TrainConfig
    from utils.runner import RunData
    from utils.training import DUCHTrainer

    cfg = TrainConfig(dataset="demo", data_dir=str(demo_features), bit=8, batch_size=32, epochs=3, **overrides)
    torch.manual_seed(0)
    data = RunData(cfg, torch.device("cpu"))
    return DUCHTrainer(cfg, data.train_views, data.query, data.db, torch.device("cpu")), data


def test_schedule_codes_and_buffers(demo_features):
    trainer, data = _trainer(demo_features, lr_decay_freq=2)
    trainer.train_epoch(0)  # 0 % 2 == 0: decay after epoch 0
    assert trainer.lr == pytest.approx(0.8e-4)
    trainer.train_epoch(1)
    assert trainer.lr == pytest.approx(0.8e-4)
    trainer.train_epoch(2)
    assert trainer.lr == pytest.approx(0.64e-4)
    b = trainer.buffers
    expected = torch.sign(((b["i1"] + b["i2"]) / 2 + (b["t1"] + b["t2"]) / 2) / 2)
    assert torch.equal(trainer.B, expected) and set(trainer.B.unique().tolist()) <= {-1.0, 1.0}
    assert all(bool((buf != 0).any(dim=1).all()) for buf in b.values())  # every sample was seen


def test_original_quirks_use_t1_for_t2(demo_features):
    trainer, data = _trainer(demo_features, original_quirks=True)
    assert data.train_views["t2"] is data.train_views["t1"]
    trainer.train_epoch(0)
    assert torch.equal(trainer.buffers["t1"], trainer.buffers["t2"])
    paper, _ = _trainer(demo_features)
    paper.train_epoch(0)
    assert not torch.equal(paper.buffers["t1"], paper.buffers["t2"])
