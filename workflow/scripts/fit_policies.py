"""Learn one scheme's policies, run its baselines and sweep its budgets (rule fit_policies)."""

import pandas as pd

from adaptive_inference.graph import scheme_graph
from adaptive_inference.io import atomic_path, read_json, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.splits import ids_of
from adaptive_inference.sweep import run_sweep, save_policies, speedup_at_loss, sweep_options

with job_log(snakemake.log[0]) as log:
    p, inputs, out = snakemake.params, snakemake.input, snakemake.output
    networks = p.scheme["networks"]
    decision = read_json(inputs.decision)["settings"][p.policies["setting"]]
    graph = scheme_graph(
        p.scheme["graph"],
        networks,
        {n: pd.read_parquet(inputs[f"predictions_{n}"]) for n in networks},
        {n: pd.read_parquet(inputs[f"exits_{n}"]) for n in networks},
        reference=p.reference,
        setting=p.policies["setting"],
        decision_ms=decision["per_example_ms"],
        topk=p.policies["topk"],
        path_features=p.policies["path_features"],
    )
    graph.scheme = snakemake.wildcards.scheme
    splits = pd.read_parquet(inputs.splits)
    train, test = ids_of(splits, "policy_train"), ids_of(splits, "test")
    log.info("graph %s: nodes %s, %d policy-training and %d test examples, decision %.4f ms",
             p.scheme["graph"], graph.names, len(train), len(test), decision["per_example_ms"])
    result = run_sweep(graph, train, test, **sweep_options(p.policies))
    write_parquet(result.points, out.points)
    write_parquet(result.nodes, out.nodes)
    save_policies(result, out.policies)
    headline = pd.concat(
        [speedup_at_loss(result.points, p.policies["loss_levels"], metric=m) for m in p.policies["losses"]],
        ignore_index=True,
    )
    log.info("speedup at loss:\n%s", headline.to_string())
    with atomic_path(out.headline) as tmp:
        headline.to_csv(tmp, index=False)
