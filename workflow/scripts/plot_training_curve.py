"""Draw one network's training curve (rule plot_training_curve)."""

import matplotlib

matplotlib.use("Agg")  # a file, never a window, whatever display the machine has

import pandas as pd  # noqa: E402

from adaptive_inference.figures import plot_training_curve  # noqa: E402
from adaptive_inference.joblog import job_log  # noqa: E402

with job_log(snakemake.log[0]):
    curve = pd.read_csv(snakemake.input[0])
    plot_training_curve(curve, snakemake.output[0], title=snakemake.wildcards.network)
