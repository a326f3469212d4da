# The policies: per scheme, the paper's learned policies, the baselines and the budget sweep,
# with the operating points chosen on policy_validation; then the same repeated over resplits
# (changing the lambda grid re-runs these jobs only).


rule fit_policies:
    input:
        unpack(get_scheme_inputs),
    output:
        points=L.policies("{scheme}", "points.parquet"),
        nodes=L.policies("{scheme}", "nodes.parquet"),
        headline=L.policies("{scheme}", "speedup_at_loss.csv"),
        policies=L.policies("{scheme}", "policies.json"),
    log:
        L.log("fit_policies", "{scheme}"),
    benchmark:
        L.benchmark("fit_policies", "{scheme}")
    # The jobs on the path to the runtime measurement (extraction, joint timing, policies,
    # measure_runtime) go before the others that are ready (figures, robustness, per-layer
    # tables): the runtime is measured soon after the costs were timed, the machine likelier in
    # the same state.
    priority: 1
    conda:
        ENV
    threads: 1
    params:
        scheme=lambda wildcards: config["policies"]["schemes"][wildcards.scheme],
        policies=get_policy_params(),
        reference=reference_network(config),
    script:
        "../scripts/fit_policies.py"


rule robustness:
    input:
        unpack(get_scheme_inputs),
    output:
        L.robustness("{scheme}"),
    log:
        L.log("robustness", "{scheme}"),
    benchmark:
        L.benchmark("robustness", "{scheme}")
    # the longest one-core jobs start first, beside the fits, so that the summary that waits for
    # them runs beside the other notebooks and not alone at the end of the study
    priority: 1
    conda:
        ENV
    threads: 1
    params:
        scheme=lambda wildcards: config["policies"]["schemes"][wildcards.scheme],
        policies=get_policy_params(),
        reference=reference_network(config),
        splits=config["splits"],
        robustness=config["robustness"],
    script:
        "../scripts/robustness.py"
