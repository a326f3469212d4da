"""Train one network of the default family, or the exit heads of a pre-trained network (rule
train_network)."""

import pandas as pd
import torch

from adaptive_inference.data import input_shape, load_split, num_classes
from adaptive_inference.device import (
    autocast_dtype,
    pin_malloc_thresholds,
    resolve_device,
    seed_everything,
)
from adaptive_inference.io import atomic_path
from adaptive_inference.joblog import job_log
from adaptive_inference.networks import build_network, network_spec, save_network
from adaptive_inference.pretrained import build_and_train
from adaptive_inference.training import TrainConfig, train


def train_family_network(p, device, log):
    full = load_split(p.data, p.data["root"], train=True)
    held_out = min(p.data["validation_size"], len(full) // 5)
    seed = p.network["training"]["seed"]
    generator = torch.Generator().manual_seed(seed)
    val_set, train_set = torch.utils.data.random_split(
        full, [held_out, len(full) - held_out], generator=generator
    )
    spec = network_spec(
        p.network["arch"],
        p.network["options"],
        num_classes=num_classes(full),
        input_shape=input_shape(full),
    )
    seed_everything(seed)  # the initial weights, then training, from the config's seed
    model = build_network(**spec)
    cfg = TrainConfig.from_config(p.network["training"])
    log.info(
        "training %s: %s on %d examples (%d held out), %s, computing in %s",
        snakemake.wildcards.network,
        spec,
        len(train_set),
        held_out,
        cfg,
        autocast_dtype(cfg.precision, device) or torch.float32,
    )
    curve = train(model, train_set, cfg, val_set=val_set, device=device)
    return model, spec, curve


def train_exit_heads(p, device, log):
    log.info("loading %s and training its exit heads on frozen features", p.network["options"])
    seed_everything(p.network["training"]["seed"])
    return build_and_train(
        p.network["options"],
        data_cfg=p.data,
        splits=pd.read_parquet(snakemake.input.splits),
        training=p.network["training"],
        loader=p.loader,
        device=device,
    )


with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    torch.set_num_threads(snakemake.threads)
    # activations stay on the heap: exit_resnet trained 1.14x faster on 2 AMD EPYC cores, to the
    # same weights (benchmarks/bench_malloc.py)
    log.info("malloc thresholds pinned: %s", pin_malloc_thresholds())
    device = resolve_device(p.device)
    trainer = train_exit_heads if p.network["arch"] == "torchvision" else train_family_network
    model, spec, curve = trainer(p, device, log)
    log.info("training curve:\n%s", curve.to_string())
    save_network(model.cpu(), spec, snakemake.output.model)
    with atomic_path(snakemake.output.curve) as tmp:
        curve.to_csv(tmp, index=False)
