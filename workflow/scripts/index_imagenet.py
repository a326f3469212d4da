"""List and check ImageNet's evaluation (or head-training) images into an index (rule prepare_data
of the ImageNet setup)."""

from adaptive_inference.imagenet import build_index
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.joblog import job_log

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    which = snakemake.wildcards.which
    index, summary = build_index(
        p.imagenet, which, num_classes=p.num_classes, workers=snakemake.threads
    )
    log.info(
        "%s: %d images of %d classes in %s (%s layout); %d unreadable images skipped",
        which,
        summary["num_images"],
        summary["num_classes_present"],
        summary["root"],
        summary["layout"],
        summary["skipped_corrupt"],
    )
    for file, why in summary["corrupt"].items():
        log.warning("skipped unreadable image %s: %s", file, why)
    write_parquet(index, snakemake.output.index)
    write_json(summary, snakemake.output.summary)
