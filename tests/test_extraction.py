import numpy as np
import pandas as pd
import pytest
import torch

from adaptive_inference.decision import confidence_features
from adaptive_inference.device import resolve_device
from adaptive_inference.extraction import extract
from adaptive_inference.io import read_json
from adaptive_inference.networks import build_network


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network(
        "exit_resnet", num_classes=10, in_channels=1, image_size=28, widths=[8, 16, 16]
    ).eval()


def test_extraction_matches_a_plain_forward(network, small_eval_set):
    result = extract(network, small_eval_set, batch_size=128, progress=False)
    images, labels = small_eval_set.tensors
    with torch.inference_mode():
        expected = torch.stack([o.softmax(1) for o in network(images)]).numpy()
    assert result.probs.shape == (3, 600, 10)
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    table = result.table
    assert len(table) == 3 * 600
    assert table.groupby("exit").size().tolist() == [600] * 3
    final = table[table["exit_name"] == "final"]
    assert final["example_id"].tolist() == list(range(600))
    assert (final["label"].to_numpy() == labels.numpy()).all()
    assert (final["prediction"].to_numpy() == expected[-1].argmax(1)).all()
    np.testing.assert_allclose(final["max_prob"], expected[-1].max(1), atol=1e-6)


def test_batch_size_does_not_change_answers(network, small_eval_set):
    a = extract(network, small_eval_set, batch_size=600, progress=False)
    b = extract(network, small_eval_set, batch_size=37, progress=False)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    assert (a.table["prediction"] == b.table["prediction"]).all()


def test_features_are_consistent():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    f = confidence_features(probs, topk=3)
    torch.testing.assert_close(f["top_p"][0], torch.tensor([0.7, 0.2, 0.1]))
    torch.testing.assert_close(f["margin"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(f["entropy"][1], torch.log(torch.tensor(4.0)))
    assert f["top_i"][0].tolist() == [0, 1, 2]


def test_correct_top5_includes_top1(network, small_eval_set):
    table = extract(network, small_eval_set, batch_size=256, progress=False).table
    assert (table["correct_top5"] | ~table["correct_top1"]).all()
    assert table["correct_top5"].mean() > table["correct_top1"].mean()


def test_written_files_and_manifest(network, small_eval_set, tmp_path):
    result = extract(network, small_eval_set, batch_size=256, progress=False, probs_dtype="float16")
    paths = [tmp_path / "probs.npy", tmp_path / "predictions.parquet", tmp_path / "manifest.json"]
    result.write(*paths)
    assert np.load(paths[0]).dtype == np.float16
    table = pd.read_parquet(paths[1])
    assert table["exit_name"].dtype == "category"
    manifest = read_json(paths[2])
    assert manifest["probs_shape"] == [3, 600, 10] and manifest["network_exits"] == [
        "stage1",
        "stage2",
        "final",
    ]
    assert set(manifest["columns"]) == set(table.columns)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("count", [1, 3, 7])
def test_sharded_extraction_equals_one_job(network, small_eval_set, tmp_path, count):
    from adaptive_inference.extraction import Extraction, merge_extractions, shard

    whole = extract(network, small_eval_set, batch_size=128, progress=False)
    parts = []
    for index in reversed(range(count)):  # any order
        part, first = shard(small_eval_set, index, count)
        result = extract(network, part, batch_size=128, progress=False, first_id=first)
        paths = [
            tmp_path / f"{index}.npy",
            tmp_path / f"{index}.parquet",
            tmp_path / f"{index}.json",
        ]
        result.write(*paths)
        parts.append(Extraction.read(*paths))
    merged = merge_extractions(parts)
    np.testing.assert_allclose(merged.probs, whole.probs, atol=1e-6)
    pd.testing.assert_frame_equal(merged.table, whole.table, atol=1e-6)
    assert merged.manifest["num_examples"] == 600 and merged.manifest["shards"] == count


def test_shards_must_tile_the_dataset(network, small_eval_set):
    from adaptive_inference.extraction import merge_extractions, shard

    first, _ = shard(small_eval_set, 0, 3)
    third, start = shard(small_eval_set, 2, 3)
    parts = [
        extract(network, first, progress=False),
        extract(network, third, progress=False, first_id=start),
    ]
    with pytest.raises(ValueError, match="do not tile"):
        merge_extractions(parts)
    with pytest.raises(ValueError, match="does not exist"):
        shard(small_eval_set, 3, 3)


def test_half_precision_extraction_is_recorded_and_close(small_eval_set):
    torch.manual_seed(0)
    model = build_network(
        "exit_resnet", num_classes=10, in_channels=1, image_size=28, widths=[8, 16, 16]
    ).eval()
    full = extract(model, small_eval_set, batch_size=128, progress=False)
    half = extract(model, small_eval_set, batch_size=128, progress=False, dtype="bfloat16")
    assert half.manifest["dtype"] == "bfloat16" and full.manifest["dtype"] == "float32"
    assert next(model.parameters()).dtype == torch.bfloat16  # the model ran in bfloat16
    assert half.probs.dtype == np.float32  # probabilities in float32 from the bfloat16 logits
    assert not np.array_equal(half.probs, full.probs)
    np.testing.assert_allclose(half.probs, full.probs, atol=0.05)
