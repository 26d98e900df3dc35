"""Structures Torch-Pruning's tracing cannot follow, left unpruned with a reason or helped by an adapter, so the
rest of the model prunes (timm's Res2Net, CSPDarkNet, MLP-Mixer, LeViT, PoolFormer, PVT v2 and CaiT reduced)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import autoprune


class SplitConcatNet(nn.Module):
    """A CSP stage: one convolution's output split in two, one half transformed, both halves concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.transition = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, worked = self.expand(torch.relu(self.stem(x))).split(8, dim=1)
        x = self.transition(torch.cat([kept, torch.relu(self.block(worked))], dim=1))
        return self.fc(torch.relu(x).mean((2, 3)))


class TokenMixer(nn.Module):
    """MLP-Mixer's token mixing: a Linear over the tokens, between two transposes of the channel stream."""

    def __init__(self, tokens: int = 4, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.tokens = nn.Linear(tokens, tokens)
        self.channels = nn.Linear(width, width)
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.tokens(x.transpose(1, 2)).transpose(1, 2)
        return self.head(torch.relu(self.channels(x)).mean(1))


class Scale(nn.Module):
    """timm MetaFormer's Scale: a vector viewed as a shape fixed when it is built."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shape = (dim, 1, 1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class ScaledNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = Scale(16)
        self.out = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.out(torch.relu(self.scale(self.conv(x)))).mean((2, 3)))


class HeadAttention(nn.Module):
    """PVT v2's attention: separate ``q`` and ``kv`` projections reshaped by a stored head count and width."""

    def __init__(self, dim: int = 16, num_heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attended = torch.softmax(q @ k.transpose(-2, -1), -1) @ v
        return self.proj(attended.transpose(1, 2).reshape(b, n, c))


class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.attention = HeadAttention()
        self.hidden = nn.Linear(16, 32)
        self.mlp_out = nn.Linear(32, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attention(x)
        x = x + self.mlp_out(torch.relu(self.hidden(x)))
        return self.head(x.mean(1))


class ClassAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return token + self.mix(x.mean(1, keepdim=True))


class ClassToken(nn.Module):
    """CaiT's class attention: a view of a parameter handed to a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 8))
        self.block = ClassAttention()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x, self.token.expand(x.shape[0], -1, -1)).squeeze(1))


def _pruned(model: nn.Module, x: torch.Tensor, rate: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    shape = model(x).shape
    autoprune.prune(model.eval(), x, rate)
    assert model(x).shape == shape
    return model


def test_a_split_whose_parts_are_concatenated_again_is_left_whole_and_the_rest_pruned():
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    skipped = autoprune.unprunable_groups(SplitConcatNet(), x)
    assert skipped["block"] == "its channels are split into parts that are concatenated again"  # with expand's
    model = _pruned(SplitConcatNet(), x)
    assert (model.expand.out_channels, model.block.out_channels) == (16, 8)
    assert (model.stem.out_channels, model.transition.out_channels) == (4, 6)


def test_channels_mapped_past_a_layer_s_end_are_left_whole_with_the_layer_named():
    x = torch.randn(2, 4, 3)
    torch.manual_seed(0)
    skipped = autoprune.unprunable_groups(TokenMixer(), x)
    assert skipped["embed"].startswith("Torch-Pruning maps its channels past the 4 of tokens (index ")
    model = _pruned(TokenMixer(), x)
    assert model.embed.out_features == 16 and model.channels.out_features == 8


def test_a_scale_viewed_as_a_fixed_shape_follows_its_pruned_channels():
    x = torch.randn(2, 3, 8, 8)
    model = _pruned(ScaledNet(), x)
    assert model.conv.out_channels == 8 and model.scale.shape == (8, 1, 1)


def test_attention_with_separate_q_and_kv_projections_keeps_them_and_prunes_the_mlp():
    x = torch.randn(2, 4, 3)
    torch.manual_seed(0)
    skipped = autoprune.unprunable_groups(AttentionNet(), x)
    assert {"attention.q", "attention.kv"} <= set(skipped)
    assert all("reads its channel count at run time" in skipped[name] for name in ("attention.q", "attention.kv"))
    model = _pruned(AttentionNet(), x)
    assert model.hidden.out_features == 16 and model.attention.kv.out_features == 32


def test_flops_are_counted_when_a_view_of_a_parameter_is_handed_to_a_submodule():
    model = ClassToken()
    flops = autoprune.measure(model, torch.randn(2, 4, 8))["flops"]
    assert flops == 2 * 2 * 8 * 8 + 2 * 2 * 8 * 5  # two samples through the class attention and the head
    assert all(p.requires_grad for p in model.parameters())


class DualPath(nn.Module):
    """DPN's dual path: a residual part and a dense part sliced from one convolution, concatenated with the
    slices of another."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.shortcut = nn.Conv2d(8, 12, 1)
        self.body = nn.Conv2d(8, 10, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        s, b = self.shortcut(x), self.body(x)
        x = torch.cat([s[:, :6] + b[:, :6], s[:, 6:], b[:, 6:]], dim=1)
        return self.fc(x.mean((2, 3)))


def test_channels_sliced_into_a_partial_residual_are_left_whole_and_the_rest_pruned():
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    skipped = autoprune.unprunable_groups(DualPath(), x)
    reason = "its channels are sliced at run time (a residual added to part of them)"
    assert skipped["shortcut"] == skipped["body"] == reason
    model = _pruned(DualPath(), x)
    assert (model.stem.out_channels, model.shortcut.out_channels, model.body.out_channels) == (4, 12, 10)


def test_a_model_torch_pruning_cannot_trace_is_one_error_naming_it(monkeypatch):
    import torch_pruning

    def gives_up(*args, **kwargs):  # what its concatenation mapping raises on timm's DPN
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(torch_pruning.DependencyGraph, "build_dependency", gives_up)
    with pytest.raises(autoprune.AutopruneError) as caught:
        autoprune.prune(DualPath(), torch.randn(2, 3, 8, 8), 0.3)
    assert str(caught.value) == (
        "Torch-Pruning cannot trace the channel dependencies of DualPath "
        "(TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'); no group of it can be pruned"
    )
