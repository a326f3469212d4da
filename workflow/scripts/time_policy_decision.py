"""Time the policy's own decision (features + linear rule) at each timing batch size (rule time_policy_decision)."""

import pandas as pd
import torch

from adaptive_inference.decision import time_decision
from adaptive_inference.extraction import resolve_device
from adaptive_inference.io import write_json
from adaptive_inference.joblog import job_log
from adaptive_inference.timing import environment, pin_malloc_thresholds

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    device = resolve_device(p.device)
    torch.set_num_threads(p.threads)
    pinned = pin_malloc_thresholds()
    # The classes the networks predict: the pre-trained networks' (ImageNet: 1,000, whatever
    # subset the evaluation images hold), else those of the evaluation labels.
    num_classes = p.num_classes or int(pd.read_parquet(snakemake.input.splits, columns=["label"])["label"].max()) + 1
    settings = {
        setting: time_decision(
            num_classes=num_classes,
            topk=p.topk,
            batch_size=batch_size,
            warmup=p.decision_timing["warmup"],
            iterations=p.decision_timing["iterations"],
            device=device,
        )
        for setting, batch_size in p.batch_sizes.items()
    }
    log.info("policy decision: %s", settings)
    env = environment(device, dtype=torch.float32, batch_sizes=p.batch_sizes, malloc_pinned=pinned)
    write_json({"settings": settings, "environment": env}, snakemake.output[0])
