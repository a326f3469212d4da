"""ImageNet's validation set in its two layouts, on generated JPEGs (tests/imagenet_fixture.py)."""

from __future__ import annotations

import pytest
import torch
from imagenet_fixture import class_index, synsets, write_class_folders, write_flat_folder
from torchvision import transforms

from adaptive_inference import data
from adaptive_inference.imagenet import CorruptImageError, ImageTable, build_index, list_images

WNIDS = [synsets()[i] for i in (3, 50, 700)]


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("imagenet") / "val", WNIDS, per_class=3)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return write_flat_folder(tmp_path_factory.mktemp("flat"), count=9)


@pytest.fixture(scope="module")
def synset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("synsets") / "synsets.txt"
    path.write_text("\n".join(synsets()) + "\n")
    return path


def test_class_folders_subset_take_their_imagenet_class_index(class_folders, synset_file):
    index = list_images({"eval": str(class_folders), "synsets": str(synset_file)}, num_classes=1000)
    assert list(index["example_id"]) == list(range(9))
    assert sorted(set(index["wnid"])) == sorted(WNIDS)
    for wnid, label in zip(index["wnid"], index["label"]):
        assert label == class_index(wnid)
    assert len(set(index["label"])) == 3 and index["label"].max() > 2  # not 0, 1, 2


def test_class_folders_without_synsets_must_be_every_class(class_folders):
    index = list_images({"eval": str(class_folders)})
    assert list(index["label"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted folder order
    with pytest.raises(
        data.DatasetNotFoundError, match="3 class folders but the networks predict 1000"
    ):
        list_images({"eval": str(class_folders)}, num_classes=1000)


def test_flat_layout_reads_the_devkit_and_the_synset_file_alike(flat):
    by_devkit = list_images(
        {"eval": str(flat["eval"]), "layout": "flat", "devkit": str(flat["devkit"])},
        num_classes=1000,
    )
    by_files = list_images(
        {
            "eval": str(flat["eval"]),
            "layout": "flat",
            "ground_truth": str(flat["devkit"] / "data" / "ILSVRC2012_validation_ground_truth.txt"),
            "synsets": str(flat["synsets"]),
        },
        num_classes=1000,
    )
    assert by_devkit.equals(by_files)
    assert list(by_devkit["wnid"]) == flat["wnids"]
    assert list(by_devkit["label"]) == [class_index(w) for w in flat["wnids"]]
    assert by_devkit["file"].iloc[0] == "ILSVRC2012_val_00000001.JPEG"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"eval": "/nonexistent/val"}, "does not exist"),
        ({"eval": "FLAT", "layout": "class_folders"}, "layout: flat"),
        ({"eval": "FOLDERS", "layout": "flat"}, "layout: class_folders"),
        ({"eval": "FLAT", "layout": "flat"}, "neither `ground_truth` nor `devkit`"),
        ({"eval": "FLAT", "layout": "flat", "ground_truth": "GT"}, "meta.mat"),
        (
            {"eval": "FLAT", "layout": "flat", "devkit": "/nonexistent/devkit"},
            "ILSVRC2012_devkit_t12",
        ),
    ],
)
def test_wrong_layouts_name_the_problem(section, message, flat, class_folders):
    paths = {
        "FLAT": str(flat["eval"]),
        "FOLDERS": str(class_folders),
        "GT": str(flat["devkit"] / "data" / "ILSVRC2012_validation_ground_truth.txt"),
    }
    section = {k: paths.get(v, v) for k, v in section.items()}
    with pytest.raises(data.DatasetNotFoundError, match=message):
        list_images(section)


def test_ground_truth_must_label_every_image(flat, tmp_path):
    short = tmp_path / "gt.txt"
    short.write_text("1\n2\n")
    with pytest.raises(data.DatasetNotFoundError, match="2 labels but .* holds 9 images"):
        list_images(
            {
                "eval": str(flat["eval"]),
                "layout": "flat",
                "ground_truth": str(short),
                "synsets": str(flat["synsets"]),
            }
        )


def test_a_corrupt_image_is_an_error_naming_it_or_skipped_and_counted(tmp_path):
    root = write_class_folders(tmp_path / "val", WNIDS[:2], per_class=3)
    broken = root / WNIDS[1] / f"{WNIDS[1]}_1.JPEG"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated: the header reads, the pixels do not
    with pytest.raises(CorruptImageError, match=str(broken)):
        build_index({"eval": str(root)}, progress=False)
    index, summary = build_index(
        {"eval": str(root), "corrupt_images": "skip"}, workers=2, progress=False
    )
    assert len(index) == 5 and list(index["example_id"]) == list(range(5))
    assert summary["skipped_corrupt"] == 1 and list(summary["corrupt"]) == [
        str(broken.relative_to(root))
    ]


def test_image_table_reads_with_a_networks_transforms(class_folders, tmp_path):
    index, _ = build_index({"eval": str(class_folders)}, progress=False)
    transform = transforms.Compose(
        [transforms.Resize(64), transforms.CenterCrop(56), transforms.ToTensor()]
    )
    table = ImageTable(index, class_folders, transform)
    image, label = table[4]
    assert image.shape == (3, 56, 56) and label == 1
    assert torch.equal(data.labels_of(table), torch.tensor(index["label"].tolist()))


def test_load_split_reads_the_index_written_under_the_data_root(class_folders, tmp_path):
    cfg = {"dataset": "imagenet", "imagenet": {"eval": str(class_folders)}, "limit_eval": 4}
    with pytest.raises(data.DatasetNotFoundError, match="prepare_data"):
        data.load_split(cfg, tmp_path, train=False)
    index, _ = build_index(cfg["imagenet"], progress=False)
    path = data.imagenet_index_path(tmp_path, "eval")
    path.parent.mkdir(parents=True)
    index.to_parquet(path)
    subset = data.load_split(cfg, tmp_path, train=False, transform=transforms.ToTensor())
    assert len(subset) == 4 and subset[0][0].shape[0] == 3


def test_a_training_subset_takes_the_first_images_of_each_class(
    class_folders, synset_file, tmp_path
):
    import pandas as pd

    from adaptive_inference.pretrained import head_training_set

    section = {
        "eval": str(class_folders),
        "train": str(class_folders),
        "train_per_class": 2,
        "synsets": str(synset_file),
    }
    index = list_images(section, "train", num_classes=1000)
    assert len(index) == 6 and index.groupby("wnid").size().tolist() == [2, 2, 2]
    assert all(f.endswith(("_0.JPEG", "_1.JPEG")) for f in index["file"])
    path = data.imagenet_index_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    index.to_parquet(path)
    cfg = {"dataset": "imagenet", "root": str(tmp_path), "imagenet": section}
    heads = head_training_set(
        cfg, pd.DataFrame({"example_id": [], "split": []}), transforms.ToTensor()
    )
    assert len(heads) == 6 and heads[3][1] == index["label"].iloc[3]
