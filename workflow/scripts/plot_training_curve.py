"""Draw one network's training curve (rule plot_training_curve)."""

import pandas as pd

from adaptive_inference.figures import plot_training_curve
from adaptive_inference.joblog import job_log

with job_log(snakemake.log[0]):
    curve = pd.read_csv(snakemake.input[0])
    plot_training_curve(curve, snakemake.output[0], title=snakemake.wildcards.network)
