"""The dataset-folder fixtures, shared by every test under tests/data."""

from vision_files import cifar10_dir, cifar100_dir, svhn_dir  # noqa: F401  (pytest finds fixtures by name)
