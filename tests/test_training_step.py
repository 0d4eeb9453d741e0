"""One DUCH training step as a unit, against a reference written here from the formulas of docs/method.md.

Tiny networks of known form stand in for DUCH's: each hashing net is tanh(x W^T + b) and the
discriminator is D(x) = <w, x> + b + 1/2 sum_j c_j x_j^2, whose input gradient w + c * x is known in
closed form, so the reference takes the gradient penalty at the interpolate without autograd. The
reference recomputes every loss term, the gradients of the hashing nets and the parameters after one
Adam step (after a first step Adam moves each parameter by lr * g / (|g| + eps), g = grad + wd * p),
and the test compares all of them with what ``DUCHTrainer._train_step`` did.
"""
import math

import pytest
import torch
from torch import nn

from configs.train import TrainConfig
from utils.train.trainer import VIEWS, DUCHTrainer

N_TRAIN, BITS, D_IMG, D_TXT = 8, 6, 5, 7
IDX = [5, 0, 3, 7, 2]  # the batch: rows of the training set, not in order
# docs/method.md, written out
LR, WD_HASH, LR_DISC, WD_DISC, DISC_BETAS = 1e-4, 5e-4, 1e-4, 1e-4, (0.5, 0.9)
GP_WEIGHT = 10.0
ADAM_EPS = 1e-8
# loss weights chosen unequal, so that a weight on the wrong term shows; a temperature other than 1
WEIGHTS = dict(alpha=0.3, beta=0.02, gamma=0.05, contrastive_weights=(0.5, 2.0, 3.0), tau=0.7)


class QuadraticDiscriminator(nn.Module):
    """D(x) = <w, x> + b + 1/2 sum_j c_j x_j^2: dD/dx = w + c * x."""

    def __init__(self, bits):
        super().__init__()
        self.w = nn.Parameter(0.7 * torch.randn(bits))
        self.b = nn.Parameter(0.1 * torch.randn(1))
        self.c = nn.Parameter(0.8 * torch.randn(bits))

    def forward(self, x):
        return (x @ self.w + self.b + 0.5 * (self.c * x * x).sum(dim=1))[:, None]


class TinyDUCH(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.image_net = nn.Sequential(nn.Linear(D_IMG, BITS), nn.Tanh())
        self.text_net = nn.Sequential(nn.Linear(D_TXT, BITS), nn.Tanh())
        self.discriminator = QuadraticDiscriminator(BITS)

    def hashing_parameters(self):
        return list(self.image_net.parameters()) + list(self.text_net.parameters())


HASH_PARAMS = ("image_net.0.weight", "image_net.0.bias", "text_net.0.weight", "text_net.0.bias")
DISC_PARAMS = ("discriminator.w", "discriminator.b", "discriminator.c")


def make_views(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "i1": torch.randn(N_TRAIN, D_IMG, generator=g), "i2": torch.randn(N_TRAIN, D_IMG, generator=g),
        "t1": torch.randn(N_TRAIN, D_TXT, generator=g), "t2": torch.randn(N_TRAIN, D_TXT, generator=g),
    }


def make_trainer(original_quirks=False, **overrides):
    cfg = TrainConfig(dataset="demo", bit=BITS, original_quirks=original_quirks, **{**WEIGHTS, **overrides})
    return DUCHTrainer(cfg, make_views(), None, None, torch.device("cpu"), model=TinyDUCH())


# ---- the reference -----------------------------------------------------------------------------------
def ref_ntxent(a, b, tau=1.0):
    """NTX of docs/method.md, one anchor row at a time."""
    n = a.shape[0]
    z = torch.cat([a, b])
    z = z / z.norm(dim=1, keepdim=True)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    total = 0.0
    for k in range(2 * n):
        neg = torch.clamp(torch.exp(z[k] @ z.T / tau).sum() - math.exp(1 / tau), min=1e-6)
        pos = torch.exp(an[k % n] @ bn[k % n] / tau)
        total = total - torch.log(pos / (neg + 1e-6))
    return total


def ref_disc(d, x):
    w, b, c = d
    return x @ w + b + 0.5 * (c * x * x).sum(dim=1)


def ref_disc_input_grad(d, x):
    w, _, c = d
    return w + c * x


def adam_first_step(p, grad, lr, wd):
    g = grad + wd * p
    return p - lr * g / (g.abs() + ADAM_EPS)


def reference_step(model, views, idx, codes_b, interpolation, original_quirks):
    """Everything one step should compute, in float64, from docs/method.md."""
    alpha, beta, gamma, w, tau = (WEIGHTS[k] for k in ("alpha", "beta", "gamma", "contrastive_weights", "tau"))
    p = {name: t.detach().double().clone().requires_grad_(True) for name, t in model.named_parameters()}
    x = {v: views[v][idx].double() for v in VIEWS}

    def img(v):
        return torch.tanh(v @ p["image_net.0.weight"].T + p["image_net.0.bias"])

    def txt(v):
        return torch.tanh(v @ p["text_net.0.weight"].T + p["text_net.0.bias"])

    h = {"i1": img(x["i1"]), "i2": img(x["i2"]), "t1": txt(x["t1"]),
         "t2": txt(x["t1"] if original_quirks else x["t2"])}  # QUIRK: txt2 = txt1

    # discriminator step: captions real, images fake, for (t1, i1) and (t2, i2); GP weighted 10 at the interpolate
    d0 = [p[n] for n in DISC_PARAMS]

    def disc_loss(real, fake, a):
        bce = -torch.log(torch.sigmoid(ref_disc(d0,
                                                real))).mean() - torch.log(1 - torch.sigmoid(ref_disc(d0, fake))).mean()
        x_hat = a * real + (1 - a) * fake
        gp = ((ref_disc_input_grad(d0, x_hat).norm(dim=1) - 1) ** 2).mean()
        return bce + GP_WEIGHT * gp

    hd = {v: h[v].detach() for v in VIEWS}
    a1, a2 = (a.double() for a in interpolation)
    loss_disc = disc_loss(hd["t1"], hd["i1"], a1) + disc_loss(hd["t2"], hd["i2"], a2)
    disc_grads = torch.autograd.grad(loss_disc, d0)
    d1 = [adam_first_step(q.detach(), g, LR_DISC, WD_DISC) for q, g in zip(d0, disc_grads)]

    # hashing step, with the discriminator as it is after its step
    loss_c = (w[0] * ref_ntxent(h["i1"], h["t1"], tau) + w[1] * ref_ntxent(h["i1"], h["i2"], tau)
              + w[2] * ref_ntxent(h["t1"], h["t2"], tau))
    fooled = ("t1", "t2") if original_quirks else ("i1", "i2")  # QUIRK: the original fooled D with captions
    loss_adv = sum(-torch.log(torch.sigmoid(ref_disc(d1, h[v]))).sum() for v in fooled)
    b = codes_b[idx].double()
    loss_q = sum(((b - h[v]) ** 2).sum() for v in VIEWS)
    loss_bb = sum((h[v].sum(dim=1) ** 2).sum() for v in VIEWS)
    loss = loss_c + alpha * loss_adv + beta * loss_q + gamma * loss_bb
    hash_grads = torch.autograd.grad(loss, [p[n] for n in HASH_PARAMS])
    after = {n: adam_first_step(p[n].detach(), g, LR, WD_HASH) for n, g in zip(HASH_PARAMS, hash_grads)}
    after.update(zip(DISC_PARAMS, d1))
    return {
        "losses": {"total": loss, "contrastive": loss_c, "adversarial": loss_adv, "quantization": loss_q,
                   "bit_balance": loss_bb, "discriminator": loss_disc},
        "codes": hd,
        "hash_grads": dict(zip(HASH_PARAMS, hash_grads)),
        "after": after,
    }


def run_both(original_quirks):
    trainer = make_trainer(original_quirks)
    idx = torch.tensor(IDX)
    before = {n: t.detach().clone() for n, t in trainer.model.named_parameters()}
    torch.manual_seed(123)  # the step's only random draws: a for (t1, i1), then a for (t2, i2)
    interpolation = (torch.rand(len(IDX), BITS), torch.rand(len(IDX), BITS))
    ref = reference_step(trainer.model, trainer.views, idx, trainer.B, interpolation, original_quirks)
    torch.manual_seed(123)
    got = trainer._train_step(idx)
    return trainer, before, got, ref


# ---- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("original_quirks", [False, True], ids=["paper", "original_quirks"])
def test_step_losses_match_the_spec(original_quirks):
    _, _, got, ref = run_both(original_quirks)
    for term, value in ref["losses"].items():
        assert float(got[term]) == pytest.approx(value.item(), rel=1e-5, abs=1e-6), term


@pytest.mark.parametrize("original_quirks", [False, True], ids=["paper", "original_quirks"])
def test_step_stores_each_view_code_in_its_buffer(original_quirks):
    trainer, _, _, ref = run_both(original_quirks)
    others = [k for k in range(N_TRAIN) if k not in IDX]
    for v in VIEWS:
        torch.testing.assert_close(trainer.buffers[v][IDX], ref["codes"][v].float(), rtol=1e-5, atol=1e-6)
        assert not trainer.buffers[v][others].any()  # rows outside the batch untouched
    if original_quirks:  # t2 is the code of the raw caption even though an augmented one was given
        torch.testing.assert_close(trainer.buffers["t2"][IDX], trainer.buffers["t1"][IDX])
    else:
        assert not torch.allclose(trainer.buffers["t2"][IDX], trainer.buffers["t1"][IDX])


@pytest.mark.parametrize("original_quirks", [False, True], ids=["paper", "original_quirks"])
def test_step_gradients_and_updates_match_the_spec(original_quirks):
    trainer, before, _, ref = run_both(original_quirks)
    params = dict(trainer.model.named_parameters())
    for name, grad in ref["hash_grads"].items():
        torch.testing.assert_close(params[name].grad, grad.float(), rtol=1e-4, atol=1e-6, msg=name)
    for name, expected in ref["after"].items():
        # the step moved the parameter by the reference's Adam step (to a hundredth of lr)
        torch.testing.assert_close(params[name].detach() - before[name], (expected - before[name].double()).float(),
                                   rtol=0, atol=1e-6, msg=name)


def test_gradient_penalty_is_taken_at_the_elementwise_interpolate():
    from utils.train import losses

    torch.manual_seed(0)
    disc = QuadraticDiscriminator(BITS)
    real, fake = torch.randn(10, BITS), torch.randn(10, BITS)
    torch.manual_seed(7)
    a = torch.rand(10, BITS)  # one weight per element, as docs/method.md says
    d = [q.detach() for q in (disc.w, disc.b, disc.c)]
    expected = ((ref_disc_input_grad(d, a * real + (1 - a) * fake).norm(dim=1) - 1) ** 2).mean()
    torch.manual_seed(7)
    assert losses.gradient_penalty(disc, real, fake).item() == pytest.approx(expected.item(), rel=1e-5)


def test_optimisers_follow_the_spec():
    trainer = make_trainer()
    assert type(trainer.opt_hash) is torch.optim.Adam and type(trainer.opt_disc) is torch.optim.Adam
    (hash_group,), (disc_group,) = trainer.opt_hash.param_groups, trainer.opt_disc.param_groups
    assert (hash_group["lr"], hash_group["weight_decay"]) == (LR, WD_HASH)
    assert (disc_group["lr"], disc_group["weight_decay"], tuple(disc_group["betas"])) == (LR_DISC, WD_DISC, DISC_BETAS)
    model = trainer.model
    assert {id(q) for q in hash_group["params"]} == {id(q) for q in model.hashing_parameters()}
    assert {id(q) for q in disc_group["params"]} == {id(q) for q in model.discriminator.parameters()}


def test_spec_defaults():
    cfg = TrainConfig()
    assert (cfg.alpha, cfg.beta, cfg.gamma, tuple(cfg.contrastive_weights),
            cfg.tau) == (0.01, 0.001, 0.01, (1, 1, 1), 1)
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.valid_freq, cfg.map_k) == (256, 100, 42, 100, 20)
    assert (cfg.lr_decay_freq, cfg.lr_decay, cfg.lr_min) == (50, 0.8, 1e-6)
    assert cfg.original_quirks is False


def test_codes_after_an_epoch_are_the_sign_of_the_mean_view():
    """One epoch of 8 samples (a single batch): buffers hold the codes made before the step, B their mean's sign."""
    trainer = make_trainer()
    with torch.no_grad():
        img, txt = trainer.model.image_net, trainer.model.text_net
        views = trainer.views
        h = {"i1": img(views["i1"]), "i2": img(views["i2"]), "t1": txt(views["t1"]), "t2": txt(views["t2"])}
    trainer.train_epoch(0)
    for v in VIEWS:
        torch.testing.assert_close(trainer.buffers[v], h[v], rtol=1e-5, atol=1e-6)
    mean_view = ((h["i1"] + h["i2"]) / 2 + (h["t1"] + h["t2"]) / 2) / 2
    assert torch.equal(trainer.B, torch.sign(mean_view))


def test_code_update_uses_all_four_views():
    """Each row has one view that decides the sign: B = sign of the mean of the four views."""
    trainer = make_trainer()
    for k, view in enumerate(VIEWS):
        for v in VIEWS:
            trainer.buffers[v][k] = 0.9 if v == view else -0.2  # mean 0.075 > 0; without `view` it is negative
            trainer.buffers[v][k + 4] = -0.9 if v == view else 0.2
    trainer._update_codes()
    assert trainer.B[:, 0].tolist() == [1.0] * 4 + [-1.0] * 4


def test_learning_rate_schedule():
    """After epoch e (from 0) with e % 50 == 0 the hashing lr is multiplied by 0.8, floor 1e-6; D's stays."""
    trainer = make_trainer()
    trainer._train_step = lambda idx: {}  # the schedule alone
    for epoch in range(101):
        trainer.train_epoch(epoch)
        decays = len([e for e in (0, 50, 100) if e <= epoch])
        assert trainer.lr == pytest.approx(1e-4 * 0.8 ** decays, rel=1e-9), epoch
        assert trainer.opt_disc.param_groups[0]["lr"] == LR_DISC
    floored = make_trainer(lr=1.5e-6)
    floored._train_step = lambda idx: {}
    floored.train_epoch(0)
    assert floored.lr == pytest.approx(1.2e-6)
    floored.train_epoch(50)
    assert floored.lr == pytest.approx(1e-6)


def test_networks_follow_the_spec():
    from models.duch import DUCH

    model = DUCH(512, 768, 64)
    for net, width in ((model.image_net, 512), (model.text_net, 768)):
        kinds = [type(m) for m in net.net]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.Tanh]
        assert (net.net[0].in_features, net.net[0].out_features, net.net[3].out_features) == (width, 4096, 64)
    d = model.discriminator.net
    assert [type(m) for m in d] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (d[0].in_features, d[0].out_features, d[3].out_features) == (64, 128, 1)


@pytest.mark.parametrize("original_quirks", [False, True])
def test_fused_views_equal_views_one_by_one(original_quirks):
    """HashingNet.forward_views (one GEMM per layer over both views) against one call per view: the same
    outputs, losses, gradients, batch-norm running statistics and parameters after a step."""
    from models.duch import DUCH

    g = torch.Generator().manual_seed(3)
    views = {"i1": torch.randn(40, 24, generator=g), "i2": torch.randn(40, 24, generator=g),
             "t1": torch.randn(40, 30, generator=g), "t2": torch.randn(40, 30, generator=g)}
    results = {}
    for fused in (True, False):
        torch.manual_seed(0)
        cfg = TrainConfig(bit=BITS, original_quirks=original_quirks)
        model = DUCH(24, 30, BITS)
        trainer = DUCHTrainer(cfg, views, None, None, torch.device("cpu"), model=model)
        trainer.fuse_views = fused
        torch.manual_seed(1)
        losses = trainer._train_step(torch.tensor([3, 17, 0, 25, 9, 38, 11]))
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[fused] = (losses, {n: p.detach().clone() for n, p in model.named_parameters()} | {"grad": grads},
                          {n: b.clone() for n, b in model.named_buffers()},
                          {v: trainer.buffers[v].clone() for v in VIEWS})
    (loss_a, param_a, buf_a, out_a), (loss_b, param_b, buf_b, out_b) = results[True], results[False]
    for term in loss_b:
        assert float(loss_a[term]) == pytest.approx(float(loss_b[term]), rel=1e-6, abs=1e-6), term
    grad_a, grad_b = param_a.pop("grad"), param_b.pop("grad")
    for name in grad_b:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-5, atol=1e-5)
    for name in param_b:
        if name.endswith("net.0.bias"):
            # batch norm cancels this bias: its gradient is 0 up to rounding, and Adam's first step moves it by
            # lr times the sign of that rounding; its gradient is compared above
            continue
        # Adam's first step is lr * g / (|g| + eps): where |g| is near eps, rounding in g shows (10 % of lr allowed)
        torch.testing.assert_close(param_a[name], param_b[name], rtol=0, atol=1e-5)
    for name in buf_b:
        torch.testing.assert_close(buf_a[name], buf_b[name], rtol=1e-6, atol=1e-6, msg=name)
    for view in VIEWS:
        torch.testing.assert_close(out_a[view], out_b[view], rtol=1e-6, atol=1e-6, msg=view)
    assert buf_a["image_net.net.1.num_batches_tracked"] == 2  # one update per view, as separate calls make
