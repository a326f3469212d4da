"""Merge one network's extraction shards into the tables of a single extraction (rule
merge_predictions)."""

from adaptive_inference.extraction import Extraction, merge_extractions
from adaptive_inference.joblog import job_log

with job_log(snakemake.log[0]) as log:
    files = list(snakemake.input.shards)
    parts = [Extraction.read(*files[i : i + 3]) for i in range(0, len(files), 3)]
    merged = merge_extractions(parts)
    log.info("merged %d shards: %d examples", len(parts), merged.manifest["num_examples"])
    out = snakemake.output
    merged.write(out.probs, out.table, out.manifest)
