"""Write results/index.html, linking every rendered notebook and figure (rule index)."""

from adaptive_inference.joblog import job_log
from adaptive_inference.notebooks import write_index

with job_log(snakemake.log[0]) as log:
    write_index(snakemake.output[0], snakemake.params.pages, study=snakemake.params.study)
    log.info("index of %d pages", len(snakemake.params.pages))
