"""Per-example predictions at every exit of one network over the evaluation set, or over one
shard of it (rules extract_predictions and extract_shard)."""

import torch

from adaptive_inference.data import load_split
from adaptive_inference.device import apply_compute, pin_malloc_thresholds, resolve_device
from adaptive_inference.extraction import extract, shard
from adaptive_inference.joblog import job_log
from adaptive_inference.networks import load_network
from adaptive_inference.pretrained import transforms_of

with job_log(snakemake.log[0]) as log:
    p, out = snakemake.params, snakemake.output
    torch.set_num_threads(snakemake.threads)
    log.info("malloc thresholds pinned: %s", pin_malloc_thresholds())  # as in train_network
    device = resolve_device(p.device)
    apply_compute(p.compute)
    model, spec = load_network(snakemake.input.model, with_spec=True)
    transform = (
        transforms_of(spec["model"], spec["weights"]) if spec["arch"] == "torchvision" else None
    )
    dataset, first_id = load_split(p.data, p.data["root"], train=False, transform=transform), 0
    index = getattr(snakemake.wildcards, "shard", None)
    if index is not None:
        dataset, first_id = shard(dataset, int(index), p.extraction["shards"])
    log.info("extracting %d examples from id %d on %s", len(dataset), first_id, device)
    result = extract(
        model,
        dataset,
        batch_size=p.extraction["batch_size"],
        device=device,
        num_workers=p.extraction["num_workers"],
        topk=p.extraction["topk"],
        probs_dtype=p.extraction["probs_dtype"],
        dtype=p.compute["dtype"],
        channels_last=p.compute["channels_last"],
        first_id=first_id,
    )
    result.manifest.update(network=snakemake.wildcards.network, threads=snakemake.threads)
    accuracy = result.table.groupby("exit_name", observed=True)[
        ["correct_top1", "correct_top5"]
    ].mean()
    log.info("accuracy on these examples:\n%s", accuracy.to_string())
    result.write(out.probs, out.table, out.manifest)
