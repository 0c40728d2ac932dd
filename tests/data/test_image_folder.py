"""dataset.name: image_folder: torchvision's ImageFolder layout, streamed through a DataLoader.

Each test writes its own tiny folder (3 classes × 12 images of 16×16 pixels). The stream is
compared with a pass built by hand from torchvision's own ``ImageFolder``, so what is checked is
the layout, the order, the seeding rule and the transforms, not the code against itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from bench.config import DataConfig
from bench.data import DatasetError, load_dataset
from bench.data.augment import build_augmentation
from bench.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, image_transforms
from bench.data.stream import StreamSplit
from tests.image_folders import write_image_folder

SIZE = 16


def _config(root: Path, **overrides) -> DataConfig:
    return DataConfig(name="image_folder", data_dir=str(root), image_size=SIZE, loader_workers=0, **overrides)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


def _stacked(batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inputs, targets, positions = zip(*batches, strict=True)
    return torch.cat(inputs), torch.cat(targets), torch.cat(positions)


def _reference_eval() -> transforms.Compose:
    """The evaluation transform written out: resize, centre crop, ImageNet statistics."""
    return transforms.Compose(
        [
            transforms.Resize(SIZE),
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


# --- the layout: splits and classes ----------------------------------------------------------


def test_train_only_is_split_stratified_and_classes_follow_torchvision(folder: Path) -> None:
    dataset = load_dataset(_config(folder, val_fraction=0.25, test_fraction=0.25))
    reference = ImageFolder(str(folder / "train"))
    assert dataset.num_classes == 3 and reference.class_to_idx == {"class0": 0, "class1": 1, "class2": 2}
    assert dataset.input_shape == (3, SIZE, SIZE)
    splits = [dataset.train, dataset.val, dataset.test]
    assert all(isinstance(split, StreamSplit) for split in splits)
    items = [split.items.tolist() for split in splits]
    # disjoint and complete: every file of train/ in exactly one split
    assert sorted(sum(items, [])) == list(range(len(reference)))
    # stratified: 3 of each class's 12 images in val and in test, 6 in train
    for split, per_class in zip(splits, (6, 3, 3), strict=True):
        assert torch.bincount(split.targets, minlength=3).tolist() == [per_class] * 3
        # each label is ImageFolder's label of that file
        assert split.targets.tolist() == [reference.targets[item] for item in split.items.tolist()]
    # seeded: the same split again, another one for another split_seed
    again = load_dataset(_config(folder, val_fraction=0.25, test_fraction=0.25))
    assert torch.equal(again.val.items, dataset.val.items)
    other = load_dataset(_config(folder, val_fraction=0.25, test_fraction=0.25, split_seed=1))
    assert not torch.equal(other.val.items, dataset.val.items)


def test_val_and_test_folders_are_used_whole_when_present(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", splits=("train", "val"), per_class=8)
    dataset = load_dataset(_config(root, test_fraction=0.25))
    assert len(dataset.val) == 24 and dataset.val.targets.tolist() == ImageFolder(str(root / "val")).targets
    assert len(dataset.test) == 6 and len(dataset.train) == 18  # test carved from train/ (2 per class)

    both = write_image_folder(tmp_path / "both", splits=("train", "val", "test"), per_class=4)
    dataset = load_dataset(_config(both))
    assert [len(dataset.train), len(dataset.val), len(dataset.test)] == [12, 12, 12]
    assert dataset.test.targets.tolist() == ImageFolder(str(both / "test")).targets


def test_subsets_and_label_noise_apply_to_the_file_list(folder: Path) -> None:
    plain = load_dataset(_config(folder))
    subset = load_dataset(_config(folder, train_fraction=0.5, max_train_samples=8, label_noise=0.25))
    assert len(plain.train) == 24 and len(subset.train) == 8
    assert set(subset.train.items.tolist()) <= set(plain.train.items.tolist())
    truth = ImageFolder(str(folder / "train")).targets
    clean = torch.tensor([truth[item] for item in subset.train.items.tolist()])
    assert int((subset.train.targets != clean).sum()) == 2  # exactly round(0.25 × 8) labels flipped
    assert torch.equal(subset.val.items, plain.val.items)  # validation stays as it was, clean


# --- the stream -------------------------------------------------------------------------------


def test_evaluation_batches_equal_an_imagefolder_pass(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", splits=("train", "val"))
    val = load_dataset(_config(root, random_resized_crop=False)).val
    inputs, targets, positions = _stacked(val.batches(10).indexed())
    reference = DataLoader(ImageFolder(str(root / "val"), transform=_reference_eval()), batch_size=10)
    expected_inputs, expected_targets = map(torch.cat, zip(*reference, strict=True))
    assert torch.equal(inputs, expected_inputs) and torch.equal(targets, expected_targets)
    assert positions.tolist() == list(range(36))
    assert [len(t) for _, t in val.batches(10)] == [10, 10, 10, 6]
    again, _, _ = _stacked(val.batches(10).indexed())
    assert torch.equal(again, inputs)  # deterministic


def test_training_batches_follow_the_seeded_order_and_per_sample_seeds(folder: Path) -> None:
    """The documented rule, rebuilt on torchvision's ImageFolder: an epoch draws a permutation and
    a seed base from the generator; sample at position p is transformed under seed base + p."""
    config = _config(folder, random_resized_crop=True)
    train = load_dataset(config).train
    inputs, targets, positions = _stacked(
        train.batches(8, train=True, generator=torch.Generator().manual_seed(5)).indexed()
    )

    train_transform, _ = image_transforms(config)
    files = ImageFolder(str(folder / "train"), transform=train_transform)
    generator = torch.Generator().manual_seed(5)
    order = torch.randperm(len(train), generator=generator)
    base = int(torch.randint(0, 2**62, (), generator=generator))
    expected = []
    for position in order.tolist():
        torch.manual_seed(base + position)
        expected.append(files[int(train.items[position])])
    assert torch.equal(positions, order)
    assert torch.equal(targets, torch.tensor([label for _, label in expected]))
    assert torch.equal(inputs, torch.stack([image for image, _ in expected]))

    same, _, _ = _stacked(train.batches(8, train=True, generator=torch.Generator().manual_seed(5)).indexed())
    other = train.batches(8, train=True, generator=torch.Generator().manual_seed(6))
    _, _, other_positions = _stacked(other.indexed())
    assert torch.equal(same, inputs)
    assert not torch.equal(other_positions, positions)


def test_augmentations_only_on_training_batches(folder: Path) -> None:
    config = _config(folder, random_resized_crop=True, crop_padding=2, horizontal_flip=True)
    train = load_dataset(config).train
    augment = build_augmentation(config)
    plain, _, _ = _stacked(train.batches(8, augment=augment).indexed())  # not training: augment is ignored
    _, evaluation = image_transforms(config)
    files = ImageFolder(str(folder / "train"), transform=evaluation)
    assert torch.equal(plain, torch.stack([files[item][0] for item in train.items.tolist()]))

    generator = torch.Generator().manual_seed(0)
    augmented, _, positions = _stacked(train.batches(8, train=True, generator=generator, augment=augment).indexed())
    assert augmented.shape == plain.shape
    changed = [not torch.equal(augmented[row], plain[position]) for row, position in enumerate(positions.tolist())]
    assert all(changed)  # a random resized crop of a noisy image is never the centre crop


def test_loader_workers_give_the_same_batches_and_leave_the_global_rng_alone(folder: Path) -> None:
    batches = {}
    for workers in (0, 2):
        config = _config(folder, random_resized_crop=True, crop_padding=2, horizontal_flip=True, cutout=4)
        config = config.model_copy(update={"loader_workers": workers})
        train = load_dataset(config).train
        assert train.workers == workers
        torch.manual_seed(123)
        before = torch.get_rng_state()
        generator = torch.Generator().manual_seed(9)
        loader = train.batches(5, train=True, generator=generator, augment=build_augmentation(config), drop_last=True)
        batches[workers] = [_stacked(loader.indexed()) for _epoch in range(2)]
        assert torch.equal(torch.get_rng_state(), before)  # init and the methods' noise draw from it
        assert len(loader) == 4 and len(batches[workers][0][1]) == 20  # the short last batch dropped
    for epoch in range(2):
        for ours, theirs in zip(batches[0][epoch], batches[2][epoch], strict=True):
            assert torch.equal(ours, theirs)
    assert not torch.equal(batches[0][0][2], batches[0][1][2])  # a new order every epoch


def test_a_stream_moves_batches_to_the_device_and_dtype(folder: Path) -> None:
    val = load_dataset(_config(folder)).val.to("cpu", torch.float64)
    inputs, targets = next(iter(val.batches(4)))
    assert inputs.dtype == torch.float64 and targets.dtype == torch.int64 and inputs.shape == (4, 3, SIZE, SIZE)


# --- bad inputs: one line each ----------------------------------------------------------------


def _refusal(config: DataConfig) -> str:
    with pytest.raises(DatasetError) as caught:
        dataset = load_dataset(config)
        list(dataset.val.batches(64))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_bad_folders_are_one_line_each(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert "needs dataset.data_dir" in _refusal(DataConfig(name="image_folder"))
    assert f"dataset.data_dir {missing} is not a folder" in _refusal(_config(missing))
    (tmp_path / "flat").mkdir()
    assert "no train folder in" in _refusal(_config(tmp_path / "flat"))
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    assert "holds no class folder" in _refusal(_config(tmp_path / "noclasses"))

    root = write_image_folder(tmp_path / "empty")
    (root / "train" / "class3").mkdir()
    (root / "train" / "class3" / "notes.txt").write_text("not an image")
    message = _refusal(_config(root))
    assert f"class folder {root / 'train' / 'class3'} holds no image (.jpg" in message

    root = write_image_folder(tmp_path / "mismatch", splits=("train", "val"))
    (root / "val" / "class2").rename(root / "val" / "class9")
    assert "differ from train/'s in class2, class9" in _refusal(_config(root))

    # Too few images to carve validation and test splits out of train/: every trial would score 0.
    root = write_image_folder(tmp_path / "tiny", classes=2, per_class=1)
    assert "the validation split is empty (2 training samples)" in _refusal(_config(root))


def test_an_unreadable_image_names_its_file_also_from_a_worker(folder: Path) -> None:
    broken = folder / "train" / "class1" / "000.png"
    broken.write_bytes(b"not a png")
    for workers in (0, 1):
        config = _config(folder, val_fraction=0.5, test_fraction=0.25).model_copy(update={"loader_workers": workers})
        with pytest.raises(DatasetError) as caught:
            split = load_dataset(config)
            for part in (split.train, split.val, split.test):
                list(part.batches(64))
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"image_folder: cannot read image {broken}: "), message


def test_image_options_on_a_tensor_dataset_are_refused() -> None:
    with pytest.raises(DatasetError, match="image_size and random_resized_crop apply to streamed image datasets"):
        load_dataset(DataConfig(name="digits", image_size=64))


def test_paths_with_control_characters_are_quoted(tmp_path: Path) -> None:
    hostile = tmp_path / "a\nb"
    message = _refusal(_config(hostile))
    assert repr(str(hostile)) in message and "\n" not in message


def test_sample_files_are_held_as_one_byte_array(folder: Path) -> None:
    reader = load_dataset(_config(folder)).train.reader
    assert isinstance(reader.paths, np.ndarray) and reader.paths.dtype.kind == "S" and len(reader.paths) == 36
