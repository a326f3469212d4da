"""Unpack Fashion-MNIST into the layout torchvision reads (rule prepare_data)."""

from adaptive_inference.data import prepare_fashion_mnist
from adaptive_inference.joblog import job_log

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    files = prepare_fashion_mnist(p.root, p.source, p.download)
    log.info("prepared %s", ", ".join(map(str, files)))
