"""timm's models as plugins: every one registered as ``timm/<name>``, and a handful pruned on tiny inputs."""

from __future__ import annotations

import pytest
import timm
import torch

import autoprune
from autoprune_plugins.models_timm import input_size

#: Small members of the families users bring from timm, with a tiny input each can take.
TINY = {
    "resnet18": (1, 32),
    "mobilenetv3_small_100": (3, 32),
    "convnext_atto": (3, 32),
    "regnetx_002": (3, 32),
    "vit_tiny_patch16_224": (3, 32),
}


def test_every_timm_model_is_registered_as_a_classifier():
    assert set(autoprune.list_models("timm/*")) == {f"timm/{n}" for n in timm.list_models()}
    assert "timm/efficientnet_b0" in autoprune.list_models("timm/*", task="classification")


@pytest.mark.parametrize("name", sorted(TINY))
def test_timm_models_prune_with_their_output_shape(name):
    in_channels, size = TINY[name]
    torch.manual_seed(0)
    extra = {"img_size": size} if name.startswith("vit_") else {}
    model = autoprune.create_model(f"timm/{name}", num_classes=7, in_channels=in_channels, **extra).eval()
    x = torch.randn(2, in_channels, size, size)
    before = autoprune.measure(model, x)
    autoprune.prune(model, x, 0.3)
    after = autoprune.measure(model, x)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    assert after["params"] < 0.9 * before["params"] and after["flops"] < 0.9 * before["flops"]


def test_pretrained_is_off_by_default_and_checked():
    model = autoprune.create_model("timm/resnet18", num_classes=3).eval()  # built offline: no weights fetched
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(autoprune.AutopruneError, match="pretrained"):
        autoprune.create_model("timm/resnet18", num_classes=3, pretrained="yes")
    assert input_size("vit_tiny_patch16_224") == (3, 224, 224)


def test_a_glu_mlp_is_built_as_two_layers_computing_the_same_and_its_hidden_channels_prune():
    from timm.layers.mlp import GluMlp, SwiGLU

    params = {"num_classes": 10, "img_size": 28, "depth": 2}
    torch.manual_seed(0)
    original = timm.create_model("eva02_tiny_patch14_224", **params).eval()
    torch.manual_seed(0)
    model = autoprune.create_model("timm/eva02_tiny_patch14_224", **params).eval()
    assert any(isinstance(m, GluMlp) for m in original.modules())
    assert not any(isinstance(m, GluMlp) for m in model.modules())
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=1e-4, atol=1e-5)
    autoprune.prune(model, x, 0.5)
    mlps = [m for m in model.modules() if isinstance(m, SwiGLU)]
    assert mlps and all(m.fc1_x.out_features == m.fc1_g.out_features == m.fc2.in_features == 256 for m in mlps)
