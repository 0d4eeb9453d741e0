"""Losses and the training loop's bookkeeping (splits: test_splits.py; one step: test_training_step.py)."""
import math

import pytest
import torch

from utils.train import losses


def reference_ntxent(a, b, tau=1.0):
    """Row-by-row NT-Xent as docs/method.md writes it."""
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


def test_gradient_penalty_of_a_linear_discriminator_is_exact():
    """D(x) = <w, x> + b has input gradient w everywhere: penalty (||w|| - 1)^2, weighted by 10."""
    torch.manual_seed(0)
    disc = torch.nn.Linear(8, 1)
    with torch.no_grad():
        disc.weight.copy_(torch.tensor([[0.9, -0.4, 0.3, 0.0, 0.5, -0.2, 0.1, 0.6]]))
    real, fake = torch.randn(16, 8), torch.randn(16, 8)
    w, b = disc.weight[0].tolist(), disc.bias.item()
    penalty = (math.sqrt(sum(x * x for x in w)) - 1) ** 2
    assert losses.gradient_penalty(disc, real, fake).item() == pytest.approx(penalty, rel=1e-5)

    def logit(row):
        return sum(wi * xi for wi, xi in zip(w, row.tolist())) + b

    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = (-sum(math.log(sigmoid(logit(r))) for r in real) / 16
                - sum(math.log(1 - sigmoid(logit(f))) for f in fake) / 16
                + 10 * penalty)
    assert losses.discriminator_loss(disc, real, fake).item() == pytest.approx(expected, rel=1e-5)


def _trainer(demo_features, **overrides):
    from configs.train import TrainConfig
    from utils.train.run_data import RunData
    from utils.train.trainer import DUCHTrainer

    cfg = TrainConfig(dataset="demo", data_dir=str(demo_features), bit=8, batch_size=32, epochs=3, **overrides)
    torch.manual_seed(0)
    data = RunData(cfg, torch.device("cpu"))
    return DUCHTrainer(cfg, data.train_views, data.query, data.db, torch.device("cpu")), data


def test_an_epoch_sees_every_sample_and_updates_the_codes(demo_features):
    """Several batches per epoch (the schedule and the step itself: test_training_step.py)."""
    trainer, data = _trainer(demo_features)
    trainer.train_epoch(0)
    b = trainer.buffers
    assert all(bool((buf != 0).any(dim=1).all()) for buf in b.values())  # every sample was seen
    assert torch.equal(trainer.B, torch.sign((b["i1"] + b["i2"]) + (b["t1"] + b["t2"])))


def test_original_quirks_run_data_feeds_t1_as_t2(demo_features):
    """RunData passes the raw captions as the t2 view; that the step then codes t1 as t2 even when a
    different t2 view is given is tested in test_training_step.py."""
    _, data = _trainer(demo_features, original_quirks=True)
    assert data.train_views["t2"] is data.train_views["t1"]
    paper, paper_data = _trainer(demo_features)
    assert not torch.equal(paper_data.train_views["t2"], paper_data.train_views["t1"])
    paper.train_epoch(0)
    assert not torch.equal(paper.buffers["t1"], paper.buffers["t2"])
