"""Repeat one scheme's fit and read-off over resplits of its evaluation examples (rule
robustness)."""

from adaptive_inference.io import write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.robustness import resplit_sweeps
from adaptive_inference.study import study_from_files
from adaptive_inference.sweep import sweep_options

with job_log(snakemake.log[0]) as log:
    p, inputs = snakemake.params, snakemake.input
    setting = p.policies["setting"]
    study = study_from_files(
        snakemake.wildcards.scheme,
        p.scheme,
        p.policies,
        p.reference,
        predictions={n: inputs[f"predictions_{n}"] for n in p.scheme["networks"]},
        costs={setting: inputs[f"costs_{setting}"]},
        splits=inputs.splits,
    )
    table = resplit_sweeps(
        study.graph(setting),
        study.splits,
        p.splits["fractions"],
        resplits=p.robustness["resplits"],
        seed=p.robustness["seed"],
        options=sweep_options(p.policies),
    )
    log.info("over %d resplits:\n%s", p.robustness["resplits"], table.to_string())
    write_parquet(table, snakemake.output[0])
