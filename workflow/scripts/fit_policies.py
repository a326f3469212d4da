"""Learn one scheme's policies, run its baselines, sweep its budgets and choose its operating
points on validation (rule fit_policies)."""

from adaptive_inference.io import atomic_path, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.study import check_family, save_policies, study_from_files
from adaptive_inference.sweep import run_sweep, sweep_options

with job_log(snakemake.log[0]) as log:
    p, inputs, out = snakemake.params, snakemake.input, snakemake.output
    networks = p.scheme["networks"]
    setting = p.policies["setting"]
    study = study_from_files(
        snakemake.wildcards.scheme,
        p.scheme,
        p.policies,
        p.reference,
        predictions={n: inputs[f"predictions_{n}"] for n in networks},
        costs={setting: inputs[f"costs_{setting}"]},
        splits=inputs.splits,
    )
    train, validation, test = (study.ids(s) for s in ("policy_train", "policy_validation", "test"))
    family = check_family(
        {n: study.tables[n] for n in networks},
        train,
        reference=p.reference if p.reference in networks else networks[-1],
        allow_near_chance=p.policies["allow_near_chance"],
    )
    log.info("family (top-1 on policy_train):\n%s", family.to_string())
    graph = study.graph(setting)
    log.info(
        "graph %s: nodes %s, decisions %s ms, %d / %d / %d examples (fit, validation, test)",
        graph.kind,
        graph.names,
        graph.decision_ms.round(4).tolist(),
        len(train),
        len(validation),
        len(test),
    )
    result = run_sweep(graph, train, validation, test, **sweep_options(p.policies))
    write_parquet(result.points, out.points)
    write_parquet(result.nodes, out.nodes)
    save_policies(result.policies, out.policies)
    log.info(
        "operating points:\n%s",
        result.headline[
            [
                "method",
                "train_loss",
                "metric",
                "max_loss",
                "choice",
                "speedup",
                "speedup_lo",
                "speedup_hi",
                "within_budget",
            ]
        ].to_string(),
    )
    with atomic_path(out.headline) as tmp:
        result.headline.to_csv(tmp, index=False)
