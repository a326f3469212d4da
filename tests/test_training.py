import pytest
import torch

from adaptive_inference.models import build_network
from adaptive_inference.training import TrainConfig, evaluate, load_network, save_network, train


def _net(arch="exit_resnet", **options):
    spec = dict(arch=arch, num_classes=10, in_channels=1, image_size=28, **options)
    return spec, build_network(**spec)


def test_training_learns_and_records_a_curve(small_train_set, small_eval_set):
    _, model = _net(widths=[8, 16, 16], blocks_per_stage=1)
    before = evaluate(model, *small_eval_set.tensors)
    cfg = TrainConfig(epochs=2, batch_size=64, exit_weights=[0.3, 0.3, 1.0])
    curve = train(model, small_train_set, cfg, val_set=small_eval_set, progress=False)
    after = evaluate(model, *small_eval_set.tensors)
    assert list(curve["epoch"]) == [1, 2]
    assert {"val_accuracy_stage1", "val_accuracy_stage2", "val_accuracy_final"} <= set(curve.columns)
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert after[-1] > 0.6 and after[-1] > before[-1] + 0.3


def test_frozen_backbone_trains_only_the_heads(small_train_set):
    _, model = _net(widths=[8, 16, 16], blocks_per_stage=1)
    backbone = {k: v.clone() for k, v in model.stages.state_dict().items()}
    heads = {k: v.clone() for k, v in model.heads.state_dict().items()}
    train(model, small_train_set, TrainConfig(epochs=1, batch_size=128), freeze_backbone=True, progress=False)
    for key, value in model.stages.state_dict().items():  # batch-norm statistics included
        torch.testing.assert_close(value, backbone[key], msg=key)
    assert any(not torch.equal(v, heads[k]) for k, v in model.heads.state_dict().items())


def test_exit_weights_must_match_the_exits(small_train_set):
    _, model = _net()
    with pytest.raises(ValueError, match="3 exits"):
        train(model, small_train_set, TrainConfig(epochs=1, exit_weights=[1.0, 1.0]), progress=False)


def test_saved_network_reloads_identically(tmp_path):
    spec, model = _net("small_cnn")
    model.eval()
    save_network(model, spec, tmp_path / "model.pt")
    again = load_network(tmp_path / "model.pt")
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), again(x))
    assert not list(tmp_path.glob("*.partial"))
