"""What a run asks of its data (``DataConfig``, the ``data:`` section of train and search
configs) and what a dataset is (``DatasetInfo``)."""
from __future__ import annotations

from dataclasses import dataclass

from src.errors import ConfigError

DATASETS = ("digits", "cifar10", "imagenet", "fashion_mnist")
SPLITS = ("train", "eval")
DEFAULT_SIZES = {"imagenet": 224, "fashion_mnist": 28}  # the others: 32


@dataclass
class DataConfig:
    """Which dataset and how to read it (the ``data:`` section of train and search configs)."""

    name: str = "digits"          # digits (built in) | cifar10 | imagenet | fashion_mnist
    path: str | None = None       # cifar10: folder of the binary .bin files; imagenet: train/ val/;
                                  # fashion_mnist: folder of the four idx files (.gz or raw)
    image_size: int | None = None  # default 32; 28 for fashion_mnist, 224 for imagenet
    num_workers: int = 2
    cutout: int = 0               # CutOut length for training splits, 0 = off
    augment: bool = True          # random crop (+flip) / RandomResizedCrop+flip for training splits

    def validate(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(f"unknown dataset '{self.name}'; valid: {', '.join(DATASETS)}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.num_workers < 1:
            raise ConfigError(f"data.num_workers must be >= 1, got {self.num_workers}")
        if self.cutout < 0:
            raise ConfigError(f"data.cutout must be >= 0 (0 = off), got {self.cutout}")

    @property
    def size(self) -> int:
        """The image side length actually used."""
        if self.image_size is not None:
            return self.image_size
        return DEFAULT_SIZES.get(self.name, 32)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    train_size: int
    eval_size: int
    channels: int = 3
