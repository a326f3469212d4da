import pytest
import torch

from adaptive_inference import device as device_module
from adaptive_inference.device import seed_everything
from adaptive_inference.networks import build_network, load_network, save_network
from adaptive_inference.training import CURVE_POINTS, TrainConfig, evaluate, train

RECIPE = dict(
    batch_size=64, max_lr=0.1, momentum=0.9, weight_decay=5e-4, seed=0, channels_last=True
)


def _net(arch="exit_resnet", **options):
    spec = dict(arch=arch, num_classes=10, in_channels=1, image_size=28, **options)
    return spec, build_network(**spec)


def test_training_learns_and_records_a_curve(small_train_set, small_eval_set):
    _, model = _net(widths=[8, 16, 16], blocks_per_stage=1)
    before = evaluate(model, *small_eval_set.tensors)
    cfg = TrainConfig(steps=64, **RECIPE, exit_weights=[0.3, 0.3, 1.0])
    curve = train(model, small_train_set, cfg, val_set=small_eval_set, progress=False)
    after = evaluate(model, *small_eval_set.tensors)
    assert len(curve) == CURVE_POINTS and curve["step"].iloc[-1] == 64
    assert curve["epoch"].iloc[-1] == pytest.approx(64 / 32)  # 2,000 images, batches of 64
    assert {"val_accuracy_stage1", "val_accuracy_stage2", "val_accuracy_final"} <= set(
        curve.columns
    )
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert after[-1] > 0.6 and after[-1] > before[-1] + 0.3


def test_a_budget_in_steps_trains_a_small_dataset_for_many_epochs(small_train_set):
    """200 images in batches of 64: 4 steps an epoch; 40 steps are 10 epochs of updates."""
    images, labels = small_train_set.tensors
    few = torch.utils.data.TensorDataset(images[:200], labels[:200])
    _, model = _net("linear")
    curve = train(model, few, TrainConfig(steps=40, **RECIPE), progress=False)
    assert curve["step"].iloc[-1] == 40 and curve["epoch"].iloc[-1] == pytest.approx(10.0)


def test_training_twice_from_the_seed_gives_the_same_bytes(small_train_set, tmp_path):
    """Seeded before the network is built, two runs give bit-identical weights and files."""
    paths = []
    for run in range(2):
        torch.manual_seed(1234 + run)  # whatever the global generator held before
        seed_everything(0)
        spec, model = _net(widths=[8, 8, 8], blocks_per_stage=1)
        train(model, small_train_set, TrainConfig(steps=12, **RECIPE), progress=False)
        paths.append(tmp_path / f"run{run}.pt")
        save_network(model, spec, paths[-1])
    first, second = (torch.load(p, weights_only=True)["state_dict"] for p in paths)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_exit_weights_must_match_the_exits(small_train_set):
    _, model = _net()
    with pytest.raises(ValueError, match="3 exits"):
        train(
            model,
            small_train_set,
            TrainConfig(steps=1, **RECIPE, exit_weights=[1.0, 1.0]),
            progress=False,
        )


def test_saved_network_reloads_identically(tmp_path):
    spec, model = _net("small_cnn")
    model.eval()
    save_network(model, spec, tmp_path / "model.pt")
    again = load_network(tmp_path / "model.pt")
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(x), again(x))
    assert not list(tmp_path.glob("*.partial"))


def test_the_config_section_must_name_every_hyper_parameter():
    with pytest.raises(ValueError, match="lacks"):
        TrainConfig.from_config({"steps": 10})
    cfg = TrainConfig.from_config({"steps": 10, "precision": "auto", **RECIPE})
    assert cfg.exit_weights is None and cfg.precision == "auto"


NATIVE_BF16 = device_module.native_bfloat16(torch.device("cpu"))


def test_precision_resolves_to_autocast_only_where_bfloat16_is_native(monkeypatch):
    cpu = torch.device("cpu")
    assert device_module.autocast_dtype("float32", cpu) is None
    for native in (True, False):
        monkeypatch.setattr(device_module, "native_bfloat16", lambda device, n=native: n)
        assert device_module.autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    # asked for explicitly on a device without it: an error with the fix, not a slow run
    with pytest.raises(RuntimeError, match="training.precision to auto or float32"):
        device_module.autocast_dtype("bfloat16", cpu)
    with pytest.raises(ValueError, match="half"):
        device_module.autocast_dtype("half", cpu)


def test_a_gpu_that_only_emulates_bfloat16_is_not_native(monkeypatch):
    # a pre-Ampere GPU: bfloat16 tensors work, through slow emulation only
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert not device_module.native_bfloat16(torch.device("cuda"))


def _conv_output_dtypes(model):
    seen = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    return seen


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_training_computes_in_the_resolved_precision_and_keeps_float32_weights(
    small_train_set, small_eval_set, precision
):
    seed_everything(0)
    _, model = _net(widths=[8, 16, 16], blocks_per_stage=1)
    seen = _conv_output_dtypes(model)
    cfg = TrainConfig(steps=48, **RECIPE, exit_weights=[0.3, 0.3, 1.0], precision=precision)
    curve = train(model, small_train_set, cfg, val_set=small_eval_set, progress=False)
    # the validation passes of the curve run in float32 whatever the training arithmetic
    expected = {torch.float32}
    if precision == "auto" and NATIVE_BF16:
        expected.add(torch.bfloat16)
    assert seen == expected
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert evaluate(model, *small_eval_set.tensors)[-1] > 0.6


@pytest.mark.skipif(not NATIVE_BF16, reason="the CPU has no native bfloat16 (AMX)")
def test_bfloat16_training_twice_from_the_seed_gives_the_same_bytes(small_train_set):
    states = []
    for _ in range(2):
        seed_everything(0)
        _, model = _net(widths=[8, 8, 8], blocks_per_stage=1)
        cfg = TrainConfig(steps=12, **RECIPE, precision="bfloat16")
        train(model, small_train_set, cfg, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
