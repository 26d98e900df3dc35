"""Built-in datasets.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  download); the default for tests and the quickstart.
- ``mnist`` and ``fashion_mnist``: read from a local copy of the IDX files when
  one exists (``root=``, else Debian's ``dataset-fashion-mnist`` /
  ``dataset-mnist`` locations), otherwise downloaded by torchvision
  (``download=True``).
- ``cifar10`` and ``cifar100``: torchvision's loaders (``root=``, ``download=``).
- ``image_folder``: a folder of class subfolders (``path=``), read by torchvision.

Every dataset returns :class:`autoprune.DataSplits`; the validation split is
carved from the training data with a fixed seed, and the test split is kept
apart.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

import autoprune
from autoprune import DataSplits, split_train_val

DEFAULT_ROOT = Path(os.environ.get("AUTOPRUNE_DATA", Path.home() / ".cache" / "autoprune" / "data"))


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / x.std()


def _fraction(name: str, key: str, value: object) -> float:
    """``value`` as a fraction strictly between 0 and 1, or an error naming ``name``'s parameter ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise autoprune.AutopruneError(f"{name} {key} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def digits(val_fraction: float = 0.2, test_fraction: float = 0.2) -> DataSplits:
    """scikit-learn's digits (Alpaydin & Kaynak, UCI 1998), as 1x8x8 images in 10 classes.

    ``test_fraction`` of the 1,797 images form the test split; ``val_fraction`` of the rest, the
    validation split (the defaults: 359 test, 288 validation, 1,150 training images).
    """
    from sklearn.datasets import load_digits

    test_fraction = _fraction("digits", "test_fraction", test_fraction)
    val_fraction = _fraction("digits", "val_fraction", val_fraction)
    bunch = load_digits()
    n = len(bunch.target)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round((n - n_test) * val_fraction))
    if n - n_test - n_val < 1:
        raise autoprune.AutopruneError(
            f"digits test_fraction={test_fraction} and val_fraction={val_fraction} leave no training image: "
            f"of {n}, {n_test} go to test and {min(n_val, n - n_test)} of the rest to validation; lower either"
        )
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4  # roughly zero mean and unit variance over the dataset
    y = torch.tensor(bunch.target, dtype=torch.long)
    full = TensorDataset(x, y)
    rest, test = split_train_val(full, test_fraction, seed=1)
    train_idx, val_idx = split_train_val(rest, val_fraction)
    return DataSplits(train_idx, val_idx, test, num_classes=10, input_shape=(1, 8, 8))


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_LOCAL_ROOTS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun et al.'s MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise autoprune.AutopruneError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _local_idx(roots: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    for root in roots:
        paths = {split: [_find_idx(root, s) for s in stems] for split, stems in _IDX_FILES.items()}
        if all(p is not None for pair in paths.values() for p in pair):
            return {split: (_read_idx(images), _read_idx(labels)) for split, (images, labels) in paths.items()}
    return None


def _mnist_like(name: str, torchvision_cls: str, root: str | None, download: bool, val_fraction: float) -> DataSplits:
    val_fraction = _fraction(name, "val_fraction", val_fraction)
    roots = [Path(root)] if root else [DEFAULT_ROOT / name, *map(Path, _LOCAL_ROOTS[name])]
    arrays = _local_idx(roots)
    if arrays is None:
        import torchvision

        target = Path(root) if root else DEFAULT_ROOT
        cls = getattr(torchvision.datasets, torchvision_cls)
        try:
            arrays = {
                split: (ds.data.numpy(), ds.targets.numpy())
                for split, ds in (
                    ("train", cls(str(target), train=True, download=download)),
                    ("test", cls(str(target), train=False, download=download)),
                )
            }
        except RuntimeError as exc:
            raise autoprune.AutopruneError(
                f"{name}: no IDX files under {', '.join(map(str, roots))} and torchvision could not "
                f"load it ({exc}); pass root= or download=True"
            ) from None
    tensors = {}
    for split, (images, labels) in arrays.items():
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        tensors[split] = (x, torch.from_numpy(labels.astype(np.int64)))
    mean, std = tensors["train"][0].mean(), tensors["train"][0].std()
    full = TensorDataset((tensors["train"][0] - mean) / std, tensors["train"][1])
    test = TensorDataset((tensors["test"][0] - mean) / std, tensors["test"][1])
    train, val = split_train_val(full, val_fraction)
    return DataSplits(train, val, test, num_classes=10, input_shape=(1, 28, 28))


def fashion_mnist(root: str | None = None, download: bool = False, val_fraction: float = 0.1) -> DataSplits:
    """Fashion-MNIST (Xiao et al., arXiv:1708.07747, 2017): 28x28 grayscale clothing images."""
    return _mnist_like("fashion_mnist", "FashionMNIST", root, download, val_fraction)


def mnist(root: str | None = None, download: bool = False, val_fraction: float = 0.1) -> DataSplits:
    """MNIST (LeCun et al., Proc. IEEE 1998): 28x28 grayscale handwritten digits."""
    return _mnist_like("mnist", "MNIST", root, download, val_fraction)


_CIFAR_STATS = {
    "CIFAR10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar(
    cls_name: str, num_classes: int, root: str | None, download: bool, val_fraction: float, augment: bool
) -> DataSplits:
    import torchvision
    from torchvision import transforms as T

    val_fraction = _fraction(cls_name.lower(), "val_fraction", val_fraction)
    cls = getattr(torchvision.datasets, cls_name)
    mean, std = _CIFAR_STATS[cls_name]
    plain = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), plain]) if augment else plain
    target = str(Path(root) if root else DEFAULT_ROOT / cls_name.lower())
    try:
        train_full = cls(target, train=True, download=download, transform=train_tf)
        val_full = cls(target, train=True, download=False, transform=plain)
        test = cls(target, train=False, download=download, transform=plain)
    except RuntimeError as exc:
        raise autoprune.AutopruneError(f"{cls_name}: {exc} (root={target!r}); pass download=True to fetch it") from None
    train_idx, val_idx = split_train_val(train_full, val_fraction)
    return DataSplits(
        Subset(train_full, train_idx.indices), Subset(val_full, val_idx.indices), test, num_classes, (3, 32, 32)
    )


def cifar10(
    root: str | None = None, download: bool = False, val_fraction: float = 0.1, augment: bool = True
) -> DataSplits:
    """CIFAR-10 (Krizhevsky, 2009), through torchvision."""
    return _cifar("CIFAR10", 10, root, download, val_fraction, augment)


def cifar100(
    root: str | None = None, download: bool = False, val_fraction: float = 0.1, augment: bool = True
) -> DataSplits:
    """CIFAR-100 (Krizhevsky, 2009), through torchvision."""
    return _cifar("CIFAR100", 100, root, download, val_fraction, augment)


def image_folder(
    path: str, image_size: int = 224, test_path: str | None = None, val_fraction: float = 0.1
) -> DataSplits:
    """A folder of class subfolders (torchvision ``ImageFolder``), resized to ``image_size``."""
    from torchvision import datasets
    from torchvision import transforms as T

    if not isinstance(path, str) or not Path(path).is_dir():
        raise autoprune.AutopruneError(f"image_folder: path {path!r} is not a directory")
    val_fraction = _fraction("image_folder", "val_fraction", val_fraction)
    tf = T.Compose(
        [
            T.Resize(image_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    full = datasets.ImageFolder(path, transform=tf)
    test = datasets.ImageFolder(test_path, transform=tf) if test_path else None
    if test is not None and test.classes != full.classes:
        raise autoprune.AutopruneError(
            f"image_folder: test_path classes {test.classes} differ from path classes {full.classes}"
        )
    train, val = split_train_val(full, val_fraction)
    return DataSplits(train, val, test, len(full.classes), (3, image_size, image_size))


@autoprune.hookimpl
def autoprune_register_datasets(register):
    register("digits", digits, description="scikit-learn's bundled 8x8 digits (no download)")
    register("mnist", mnist, description="MNIST: local IDX files, else torchvision download")
    register("fashion_mnist", fashion_mnist, description="Fashion-MNIST: local IDX files, else torchvision download")
    register("cifar10", cifar10, description="CIFAR-10 through torchvision (root=, download=)")
    register("cifar100", cifar100, description="CIFAR-100 through torchvision (root=, download=)")
    register("image_folder", image_folder, description="a folder of class subfolders (path=)")
