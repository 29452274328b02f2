"""An image-folder task: PNG files in one folder per class, read lazily by a Dataset, augmented in
plain torch (random shifts of up to 1 pixel), batched by DataLoaders with 2 worker processes.

    python examples/tasks/image_folder.py data/digits-png    # writes scikit-learn's digits as PNGs
    lrtune sweep examples/tasks/image_folder.yaml            # task: "examples.tasks.image_folder:digits_folder"
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainables.tasks import Task, accuracy


class ImageFolder(Dataset):
    """root/<class>/<name>.png -> (1 x H x W float tensor in [0, 1], class index); each file is read
    when its item is asked for, so the data never has to fit in memory."""

    def __init__(self, root: Path, augment: bool = False):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files = [(f, i) for i, c in enumerate(self.classes) for f in sorted((root / c).glob("*.png"))]
        self.augment = augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path, label = self.files[i]
        x = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0).unsqueeze(0)
        if self.augment:  # a random shift of up to one pixel each way (torch's RNG: seeded per worker)
            dy, dx = torch.randint(-1, 2, (2,)).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(1, 2))
        return x, label


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, classes))

    def forward(self, x):
        return self.net(x)


def digits_folder(data_dir: str) -> Task:
    train = ImageFolder(Path(data_dir) / "train", augment=True)
    val = ImageFolder(Path(data_dir) / "val")
    pin = torch.cuda.is_available()
    return Task(
        "digits_folder", models={"cnn": SmallCNN}, loss_fn=nn.functional.cross_entropy, metric=accuracy,
        train_loader=lambda batch_size, seed, epoch: DataLoader(
            train, batch_size, shuffle=True, drop_last=True, num_workers=2, pin_memory=pin,
            generator=torch.Generator().manual_seed(1000 * seed + epoch)),
        val_loader=lambda batch_size: DataLoader(val, batch_size, num_workers=2, pin_memory=pin))


def write_digits(folder: str | Path, val_share: float = 0.2) -> Path:
    """scikit-learn's bundled 8x8 digits as PNG files: folder/{train,val}/<digit>/<index>.png."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(len(x) * (1 - val_share))
    for split, idx in (("train", order[:cut]), ("val", order[cut:])):
        for i in idx:
            d = Path(folder) / split / str(y[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((x[i].reshape(8, 8) * 255 / 16).astype(np.uint8)).save(d / f"{i}.png")
    return Path(folder)


if __name__ == "__main__":
    print(f"wrote {write_digits(sys.argv[1] if len(sys.argv) > 1 else 'data/digits-png')}")
