"""The suite's own shortcuts (tests/conftest.py) must give what the real thing gives."""
import warnings

import torch


def test_memoised_random_resnet18_is_what_torchvision_builds():
    import torchvision.models
    import torchvision.models.resnet

    from models.image_encoder import build_image_encoder

    assert torchvision.models.resnet18.__module__ == "tests.conftest"  # the memo is in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # --weights none
        torch.manual_seed(3)
        first, _ = build_image_encoder("none")
        after_first = torch.rand(3)
        first_conv = first.conv1.weight.detach().clone()
        first.conv1.weight.data.zero_()  # what a caller does to its model does not reach the memo
        torch.manual_seed(3)
        again, _ = build_image_encoder("none")
        after_again = torch.rand(3)
        again_conv = again.conv1.weight.detach().clone()
        again.conv1.weight.data.zero_()
        torch.manual_seed(3)
        third, _ = build_image_encoder("none")
    torch.manual_seed(3)
    real = torchvision.models.resnet.resnet18(weights=None)  # torchvision itself, not memoised
    after_real = torch.rand(3)
    real.fc = torch.nn.Identity()
    assert torch.equal(again_conv, first_conv) and torch.equal(third.conv1.weight, first_conv)
    assert torch.equal(after_again, after_first)
    assert torch.equal(after_real, after_first)  # the generator is left where a real build leaves it
    for (name, got), want in zip(third.state_dict().items(), real.state_dict().values()):
        assert torch.equal(got, want), name
