"""Split the evaluation set into head-training, policy-training, policy-validation and test parts
(rule make_splits)."""

from adaptive_inference.data import labels_of, load_split
from adaptive_inference.io import write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.splits import make_splits

with job_log(snakemake.log[0]) as log:
    p = snakemake.params
    labels = labels_of(load_split(p.data, p.data["root"], train=False)).numpy()
    splits = make_splits(labels, p.splits["fractions"], p.splits["seed"])
    write_parquet(splits, snakemake.output[0])
    log.info("split sizes:\n%s", splits["split"].value_counts().to_string())
