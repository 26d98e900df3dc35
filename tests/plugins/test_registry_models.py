"""Every registered model and dataset, built small and exercised (timm-style registry tests)."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch
from torch.utils.data import Subset

import autoprune

OWN_MODELS = [n for n in autoprune.list_models(task="classification") if not n.startswith(("torchvision/", "timm/"))]

# One member of each torchvision family named in the project's goals, at a small input size.
TORCHVISION = {
    "resnet18": {},
    "resnext50_32x4d": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "efficientnet_b0": {},
    "densenet121": {},
    "googlenet": {},
    "regnet_x_400mf": {},
    "shufflenet_v2_x0_5": {},
    "squeezenet1_1": {},
    "vgg11_bn": {},
    "convnext_tiny": {},
    "mnasnet0_5": {},
    "vit_b_16": {"image_size": 32},
    "swin_t": {},
}


@pytest.mark.parametrize("name", OWN_MODELS)
def test_own_classifiers_honour_shapes_and_prune(name):
    torch.manual_seed(0)
    model = autoprune.create_model(name, num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 16, 16)
    assert model(x).shape == (2, 7)
    before = autoprune.measure(model, x)
    autoprune.prune(model, x, 0.5)
    after = autoprune.measure(model, x)
    assert model(x).shape == (2, 7)
    assert after["params"] < 0.5 * before["params"] and after["flops"] < 0.5 * before["flops"]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_families_prune_with_output_shape_kept(name):
    torch.manual_seed(0)
    model = autoprune.create_model(f"torchvision/{name}", num_classes=10, in_channels=3, **TORCHVISION[name]).eval()
    size = 32 if name == "vit_b_16" else 64
    x = torch.randn(1, 3, size, size)
    before = autoprune.count_params(model)
    autoprune.prune(model, x, 0.3)
    assert model(x).shape == (1, 10)
    assert autoprune.count_params(model) < 0.8 * before


def test_torchvision_stem_follows_in_channels():
    model = autoprune.create_model("torchvision/resnet18", num_classes=4, in_channels=1).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 4)


def _indices(split):
    assert isinstance(split, Subset)
    return set(split.indices)


def test_digits_splits_are_disjoint_and_shaped():
    data = autoprune.create_dataset("digits")
    assert data.num_classes == 10 and data.input_shape == (1, 8, 8)
    x, y = data.train[0]
    assert x.shape == (1, 8, 8) and 0 <= int(y) < 10
    train, val, test = _indices(data.train), _indices(data.val), _indices(data.test)
    assert not (train & val)
    assert len(train) + len(val) + len(test) == 1797
    # train and val index into the non-test part; their union is all of it
    assert train | val == set(range(len(data.train.dataset)))
    again = autoprune.create_dataset("digits")
    assert _indices(again.val) == val  # fixed seed


def _write_idx(path, array: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_read_local_idx_files(tmp_path, name):
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 255, (n, 28, 28), generator=g))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    data = autoprune.create_dataset(name, root=str(tmp_path), val_fraction=0.25)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 10
    assert data.train[0][0].shape == (1, 28, 28)
    assert not (_indices(data.train) & _indices(data.val))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_download_is_a_clear_error(tmp_path, name):
    with pytest.raises(autoprune.AutopruneError, match="download"):
        autoprune.create_dataset(name, root=str(tmp_path / "empty"), download=False)


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 16), (i * 40, 10, 200 if cls == "cat" else 0)).save(tmp_path / cls / f"{i}.png")
    data = autoprune.create_dataset("image_folder", path=str(tmp_path), image_size=12, val_fraction=0.2)
    assert data.num_classes == 2 and data.input_shape == (3, 12, 12)
    assert len(data.train) == 8 and len(data.val) == 2 and data.test is None
    assert data.val[0][0].shape == (3, 12, 12)
    with pytest.raises(autoprune.AutopruneError, match="not a directory"):
        autoprune.create_dataset("image_folder", path=str(tmp_path / "nope"))
