# Adaptive inference study (Bolukbasi et al., ICML 2017): see README.md.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default study, unless a study config is given with --configfile: Snakemake would
# otherwise merge the two (a study's networks would be added to the default family's).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/networks.smk"
include: "workflow/rules/extraction.smk"
include: "workflow/rules/timing.smk"
include: "workflow/rules/policies.smk"
include: "workflow/rules/runtime.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        get_final_outputs(),


onsuccess:
    from adaptive_inference.study import run_summary

    print("\n".join(run_summary(L, SCHEMES, config["runtime"]["loss_levels"])))
