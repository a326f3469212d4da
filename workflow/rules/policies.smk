# The policies: the decision's own cost, then per scheme the paper's learned policies, the
# baselines and the budget sweep (changing the lambda grid re-runs these jobs only).


rule time_policy_decision:
    input:
        splits=f"{RESULTS}/splits/eval_splits.parquet",
    output:
        f"{RESULTS}/timing/policy_decision.json",
    log:
        f"{LOGS}/time_policy_decision.log",
    conda:
        "../../envs/environment.yaml"
    threads: workflow.cores
    params:
        batch_sizes=config["timing"]["batch_sizes"],
        threads=config["timing"]["threads"],
        topk=config["policies"]["topk"],
        num_classes=PRETRAINED_NUM_CLASSES,
        decision_timing=config["policies"]["decision_timing"],
        device=config["device"],
    script:
        "../scripts/time_policy_decision.py"


rule fit_policies:
    input:
        unpack(get_scheme_inputs),
        splits=f"{RESULTS}/splits/eval_splits.parquet",
        decision=f"{RESULTS}/timing/policy_decision.json",
    output:
        points=f"{RESULTS}/policies/{{scheme}}/points.parquet",
        nodes=f"{RESULTS}/policies/{{scheme}}/nodes.parquet",
        headline=f"{RESULTS}/policies/{{scheme}}/speedup_at_loss.csv",
        policies=f"{RESULTS}/policies/{{scheme}}/policies.pkl",
    log:
        f"{LOGS}/fit_policies/{{scheme}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fit_policies/{{scheme}}.tsv"
    conda:
        "../../envs/environment.yaml"
    threads: 1
    params:
        scheme=lambda wildcards: config["policies"]["schemes"][wildcards.scheme],
        policies=get_policy_params(),
        reference=get_reference(),
    script:
        "../scripts/fit_policies.py"
