"""Unpack Fashion-MNIST into the layout torchvision reads and decode its splits once (rule
prepare_data)."""

from adaptive_inference.data import prepare_fashion_mnist
from adaptive_inference.joblog import job_log

with job_log(snakemake.log[0]) as log:
    data = snakemake.config["data"]
    files = prepare_fashion_mnist(snakemake.params.root, data["source"], data["download"])
    log.info("prepared %s", ", ".join(map(str, files)))
