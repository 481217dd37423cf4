"""Datasets: the built-in digits set, CIFAR-10, ImageNet and Fashion-MNIST; splits, sharding,
augmentation. One module per dataset (digits, cifar, imagenet, fashion_mnist), the image-file
checks apart (images), one dispatcher (pipeline); this package re-exports the public names.

Every pipeline is ordered on the host: :func:`sample_order` decides which samples a run sees
and in which order (indices -> seeded permutation per epoch -> this rank's shard -> skip the
batches already done), and a ``ds.SubsetSampler`` replays that order exactly. A resumed run
therefore sees the same batches as an uninterrupted one, and shards are disjoint.

Augmentation reproducibility:

* digits and Fashion-MNIST (served from memory): augmentation is done on the host with numpy;
  the shifts, flips and CutOut centres of sample ``i`` in epoch ``e`` depend only on
  ``(seed, e, i)``, so batches are bit-identical across runs, resumes and shard layouts.
* CIFAR-10 / ImageNet (MindSpore's C++ readers and ops): the pipeline seed is set from
  ``(seed, epoch, start_batch)`` (``src.context.seed_data_pipeline``); two runs with the same
  arguments give the same batches. A resumed epoch sees the same images in the same order, but
  its random crops after the resume point are drawn afresh.

Columns of every dataset: ``image`` float32 (N, C, H, W), normalised (C = 1 for
Fashion-MNIST, else 3); ``label`` int32.
"""
from src.data.cifar import (CIFAR_MEAN, CIFAR_RECORD, CIFAR_RECORDS_PER_FILE, CIFAR_STD,
                            CIFAR_TEST_FILES, CIFAR_TRAIN_FILES)
from src.data.config import DATASETS, SPLITS, DataConfig, DatasetInfo
from src.data.digits import (DIGITS_EVAL_FRACTION, DIGITS_MEAN, DIGITS_SPLIT_FILE,
                             DIGITS_SPLIT_SEED, DIGITS_STD, _digits_raw, digits_split)
from src.data.fashion_mnist import FASHION_FILES, FASHION_MEAN, FASHION_STD, read_idx
from src.data.imagenet import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD
from src.data.images import DECODER_DUMPS, image_problem, pipeline_error, verify_images
from src.data.order import num_batches, sample_order
from src.data.pipeline import dataset_info, make_dataset, search_split, verify_dataset

__all__ = [
    "CIFAR_MEAN", "CIFAR_RECORD", "CIFAR_RECORDS_PER_FILE", "CIFAR_STD", "CIFAR_TEST_FILES",
    "CIFAR_TRAIN_FILES", "DATASETS", "DECODER_DUMPS", "DIGITS_EVAL_FRACTION", "DIGITS_MEAN",
    "DIGITS_SPLIT_FILE", "DIGITS_SPLIT_SEED", "DIGITS_STD", "FASHION_FILES", "FASHION_MEAN",
    "FASHION_STD", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "SPLITS", "DataConfig",
    "DatasetInfo", "_digits_raw", "dataset_info", "digits_split", "image_problem",
    "make_dataset", "num_batches", "pipeline_error", "read_idx", "sample_order", "search_split",
    "verify_dataset", "verify_images",
]
