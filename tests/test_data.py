import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from adaptive_inference import data
from adaptive_inference.splits import SPLITS, ids_of, make_splits, resplit


def test_fashion_mnist_is_unpacked_for_torchvision(fashion_root):
    raw = fashion_root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.FASHION_MNIST_FILES)
    test_set = data.fashion_mnist(fashion_root, train=False)
    images, labels = test_set.tensors
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.bincount().tolist() == [1000] * 10
    assert abs(float(images.mean())) < 0.1  # normalised with the training set's statistics


def test_unpacked_files_match_the_packaged_ones(fashion_root):
    with gzip.open(data.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as handle:
        assert (
            fashion_root / "FashionMNIST/raw/t10k-labels-idx1-ubyte"
        ).read_bytes() == handle.read()


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.prepare_fashion_mnist(tmp_path / "root", tmp_path / "nowhere", download=False)
    with pytest.raises(data.DatasetNotFoundError, match="prepare_data"):
        data.fashion_mnist(tmp_path / "root", train=False)


def test_image_folder_with_transforms(tmp_path):
    for label, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        folder = tmp_path / f"class{label}"
        folder.mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), colour).save(folder / f"{i}.jpg")
    spec = {"resize": 32, "center_crop": 24, "mean": [0.5] * 3, "std": [0.5] * 3}
    dataset = data.load_split(
        {
            "dataset": "image_folder",
            "image_folder": {"eval": str(tmp_path), "train": None, "transform": spec},
        },
        root=None,
        train=False,
    )
    assert len(dataset) == 6 and data.num_classes(dataset) == 2
    assert data.input_shape(dataset) == (3, 24, 24)
    assert data.labels_of(dataset).tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset[0][0][0].mean() > 0.9  # red channel of a red image, normalised


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=str(tmp_path / "missing")):
        data.image_folder(tmp_path / "missing", {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="class-folder"):
        data.image_folder(tmp_path / "empty", {})


def test_splits_are_stratified_disjoint_and_reproducible():
    labels = np.repeat(np.arange(10), 100)
    fractions = {"head_train": 0.2, "policy_train": 0.3, "policy_validation": 0.1, "test": 0.4}
    splits = make_splits(labels, fractions, seed=3)
    assert splits["example_id"].tolist() == list(range(1000))
    assert list(splits["split"].cat.categories) == list(SPLITS)
    counts = splits.groupby(["split", "label"], observed=True).size().unstack()
    assert (counts.loc["head_train"] == 20).all() and (counts.loc["test"] == 40).all()
    assert (counts.loc["policy_train"] == 30).all() and (
        counts.loc["policy_validation"] == 10
    ).all()
    assert sum(len(ids_of(splits, s)) for s in SPLITS) == 1000
    assert make_splits(labels, fractions, seed=3).equals(splits)
    assert not make_splits(labels, fractions, seed=4)["split"].equals(splits["split"])


def test_splits_without_head_training():
    fractions = {"policy_train": 0.35, "policy_validation": 0.15, "test": 0.5}
    splits = make_splits(np.repeat(np.arange(4), 20), fractions, seed=0)
    assert len(ids_of(splits, "head_train")) == 0 and len(ids_of(splits, "test")) == 40
    assert (
        len(ids_of(splits, "policy_validation")) == 12 and len(ids_of(splits, "policy_train")) == 28
    )


def test_resplits_deal_the_policy_splits_again_and_keep_head_train():
    labels = np.repeat(np.arange(5), 40)
    fractions = {"head_train": 0.2, "policy_train": 0.4, "policy_validation": 0.1, "test": 0.3}
    splits = make_splits(labels, fractions, seed=0)
    again = resplit(splits, fractions, seed=1)
    head = splits["split"] == "head_train"
    assert (again["split"] == "head_train").equals(head)  # the exit heads' examples stay
    assert not again["split"].equals(splits["split"])
    assert again["split"].value_counts().to_dict() == splits["split"].value_counts().to_dict()
    assert (
        again.groupby(["split", "label"], observed=True).size().unstack().loc["test"] == 12
    ).all()
    assert resplit(splits, fractions, seed=1).equals(again)
    assert again[["example_id", "label"]].equals(splits[["example_id", "label"]])


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"policy_train": 0.5, "policy_validation": 0.1, "test": 0.6}, "sum to 1"),
        ({"policy_train": 1.0, "policy_validation": 0.0, "test": 0.0}, "non-empty"),
        ({"policy_train": 0.5, "test": 0.5}, "non-empty"),  # no policy_validation
        ({"policy_train": 0.5, "policy_validation": 0.1, "tests": 0.4}, "unknown splits"),
    ],
)
def test_bad_split_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        make_splits(np.zeros(10), fractions, seed=0)


def test_prepared_splits_are_torchvision_decoding(fashion_root):
    """The jobs read the splits decoded once by prepare_data: the same pixels and labels as
    torchvision's FashionMNIST reading the raw files."""
    from torchvision import datasets

    for train in (True, False):
        reference = datasets.FashionMNIST(fashion_root, train=train, download=False)
        prepared = torch.load(data.fashion_mnist_prepared(fashion_root, train), weights_only=True)
        assert torch.equal(prepared["images"], reference.data)
        assert torch.equal(prepared["labels"], reference.targets)
