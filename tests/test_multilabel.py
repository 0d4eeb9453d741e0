"""Relevance with multi-hot labels where a run evaluates: items sharing ANY label are relevant (docs/method.md).

Runs read one class code per image today (the dataset JSON has no multi-label field); these tests hold
the evaluation a run calls (``evaluate_codes``, and ``DUCHTrainer.validate``) to the definition with
multi-hot rows, on a case worked out by hand.
"""
import pytest
import torch
from torch import nn

from configs.train import TrainConfig
from utils.retrieval.evaluation import Codes, EvalSet, evaluate_codes
from utils.train.trainer import DUCHTrainer

# database codes at Hamming distance 0, 1, 2, 3 from query 0 (and 4, 3, 2, 1 from query 1)
DB_CODES = torch.tensor([[1, 1, 1, 1], [-1, 1, 1, 1], [-1, -1, 1, 1], [-1, -1, -1, 1]], dtype=torch.float32)
Q_CODES = torch.tensor([[1, 1, 1, 1], [-1, -1, -1, -1]], dtype=torch.float32)
Q_LABELS = torch.tensor([[1, 1, 0], [0, 0, 1]])
DB_LABELS = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]])
# query 0 (labels 0, 1): relevant d1 (label 1), d2 (label 0), d3 (label 1) at ranks 2, 3, 4 -> AP = (1/2 + 2/3 + 3/4) /
# 3
# query 1 (label 2): ranking d3, d2, d1, d0; relevant d3 (label 2) and d0 (label 2) at ranks 1, 4 -> AP = (1/1 + 2/4) /
# 2
EXPECTED_MAP = ((1 / 2 + 2 / 3 + 3 / 4) / 3 + (1 + 2 / 4) / 2) / 2
EXPECTED_CHANCE = 5 / 8


def codes(q, db):
    return Codes(q_img=q, q_txt=q, db_img=db, db_txt=db)


@pytest.fixture(params=["auto", "without_numba"])
def kernel_choice(request, monkeypatch):
    """The kernel a run picks here, and the numpy one a machine without numba falls back to."""
    if request.param == "without_numba":
        import utils.retrieval.counting as metrics

        monkeypatch.setattr(metrics, "_numba_module", lambda: None)
    return request.param


def test_items_sharing_any_label_are_relevant(kernel_choice):
    out = evaluate_codes(codes(Q_CODES, DB_CODES), Q_LABELS, DB_LABELS)
    for k in ("map@20", "map@10"):
        for direction in ("i2t", "t2i", "i2i", "t2t", "avg"):
            assert out[k][direction] == pytest.approx(EXPECTED_MAP, abs=1e-6), (k, direction)
    assert out["chance"]["i2t"] == pytest.approx(EXPECTED_CHANCE)


def test_one_hot_rows_equal_class_codes():
    gen = torch.Generator().manual_seed(0)
    q = torch.where(torch.rand(12, 8, generator=gen) > 0.5, 1.0, -1.0)
    db = torch.where(torch.rand(40, 8, generator=gen) > 0.5, 1.0, -1.0)
    q_labels, db_labels = torch.randint(0, 4, (12,), generator=gen), torch.randint(0, 4, (40,), generator=gen)
    as_codes = evaluate_codes(codes(q, db), q_labels, db_labels)
    one_hot = evaluate_codes(codes(q, db), torch.eye(4)[q_labels], torch.eye(4)[db_labels])
    for key in ("map@20", "map@10", "chance"):
        assert one_hot[key] == pytest.approx(as_codes[key])


class SignModel(nn.Module):
    """Codes are the signs of the features: the run's evaluation path with known codes."""

    def __init__(self):
        super().__init__()
        self.image_net, self.text_net, self.discriminator = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)

    def hashing_parameters(self):
        return list(self.image_net.parameters()) + list(self.text_net.parameters())

    def encode(self, images, captions):
        return torch.sign(images), torch.sign(captions)


def test_validation_of_a_run_with_multi_hot_labels(kernel_choice):
    query = EvalSet(Q_CODES * 0.5, Q_CODES * 0.3, Q_LABELS)
    db = EvalSet(DB_CODES * 0.7, DB_CODES * 0.2, DB_LABELS)
    views = {v: torch.randn(4, 4) for v in ("i1", "i2", "t1", "t2")}
    trainer = DUCHTrainer(TrainConfig(dataset="demo", bit=4), views, query, db, torch.device("cpu"), model=SignModel())
    out = trainer.validate()
    assert out["map@20"]["avg"] == pytest.approx(EXPECTED_MAP, abs=1e-6)
