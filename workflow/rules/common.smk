# Config validation and the helpers (get_<thing>) the rules share. Paths come from the package's
# Layout, the one place the results/ layout is written.
from pathlib import Path

from snakemake.utils import validate

from adaptive_inference.config import (
    ConfigError,
    check_config,
    figure_notebooks,
    figure_options,
    network_training,
    pretrained_networks,
    reference_network,
    runtime_schemes,
)
from adaptive_inference.joblog import put_package_on_job_path
from adaptive_inference.layout import Layout, fashion_mnist_files
from adaptive_inference.notebooks import NOTEBOOKS, figure_names, skip_iri_format_parser

skip_iri_format_parser()  # before validate() imports jsonschema: 1.2 s of every start
validate(config, schema="../schemas/config.schema.yaml", set_default=True)
try:
    check_config(config)
except ConfigError as error:
    raise WorkflowError(f"Invalid config: {error}") from None

put_package_on_job_path()

L = Layout("results")
NETWORKS = list(config["networks"])
SCHEMES = list(config["policies"]["schemes"])
RUNTIME_SCHEMES = runtime_schemes(config)
SETTINGS = list(config["timing"]["batch_sizes"])  # latency, throughput
# The notebook templates and the plotting module they import are inputs of the notebook rules
# (an edit re-runs them); they live beside the Snakefile, wherever the results are written.
NOTEBOOK_TEMPLATES = Path(workflow.basedir) / "notebooks"
FIGURE_HELPERS = Path(workflow.basedir) / "src" / "adaptive_inference" / "figures.py"
NOTEBOOK_SECTIONS = {
    name: name.split("_", 1)[1] for name in NOTEBOOKS
}  # 2_early_exit: early_exit
ENV = "../../envs/environment.yaml"


wildcard_constraints:
    network="|".join(NETWORKS),
    scheme="|".join(SCHEMES),
    setting="|".join(SETTINGS),
    shard=r"\d+",
    which="eval|train",


def get_dataset_files():
    """The prepared dataset files a rule reads (none for an external image folder)."""
    data = config["data"]
    if data["dataset"] == "fashion_mnist":
        return fashion_mnist_files(data["root"])
    if data["dataset"] == "imagenet":
        sets = ["eval", "train"] if data["imagenet"]["train"] else ["eval"]
        return [f"{data['root']}/imagenet/{which}_index.parquet" for which in sets]
    return []


def get_eval_files():
    """The prepared files of the evaluation set (ImageNet: its index, not the training one's)."""
    return [
        path for path in get_dataset_files() if not path.endswith("train_index.parquet")
    ]


def get_training_inputs(wildcards):
    """What training a network reads: the dataset; a pre-trained network's exit heads learn on
    the evaluation set's head_train split (or on data.imagenet.train)."""
    inputs = {"data": get_dataset_files()}
    if wildcards.network in pretrained_networks(config):
        inputs["splits"] = L.splits
    return inputs


def get_feature_loader_params(wildcards):
    """How a pre-trained network's pooled features are read for its heads (extraction's batch
    size and workers); nothing for a network trained here, so these never retrain it."""
    if wildcards.network not in pretrained_networks(config):
        return {}
    return {key: config["extraction"][key] for key in ("batch_size", "num_workers")}


def get_pretrained_num_classes():
    """The classes the pre-trained networks predict (all must agree), or None."""
    if not pretrained_networks(config):
        return None
    # torchvision's models take seconds to import: only a paper-setup study pays it
    from adaptive_inference.pretrained import num_classes_of

    counts = {
        num_classes_of(
            config["networks"][n]["options"]["model"],
            config["networks"][n]["options"]["weights"],
        )
        for n in pretrained_networks(config)
    }
    if len(counts) > 1:
        raise WorkflowError(
            f"Invalid config: the pre-trained networks predict {sorted(counts)} classes; use weights of one label set."
        )
    return counts.pop()


PRETRAINED_NUM_CLASSES = get_pretrained_num_classes()


def get_data_params():
    """The data section as the rules that read images see it (without the other datasets'
    sections, so that their defaults never re-run anything)."""
    others = {"image_folder", "imagenet"} - {config["data"]["dataset"]}
    return {
        k: v
        for k, v in config["data"].items()
        if k not in ("source", "download", *others)
    }


def get_network_params(wildcards):
    """A network's own config entry and its merged training section."""
    entry = config["networks"][wildcards.network]
    return {
        "arch": entry["arch"],
        "options": entry["options"],
        "training": network_training(config, wildcards.network),
    }


def get_extraction_shards(wildcards):
    """The shard files of one network's extraction (``extraction.shards`` of them)."""
    return [
        L.shard(wildcards.network, index, ext)
        for index in range(config["extraction"]["shards"])
        for ext in ("npy", "parquet", "json")
    ]


def get_models():
    return {f"model_{n}": L.network(n) for n in NETWORKS}


def get_layer_timing_params():
    """What the per-layer tables of a network read of `timing` (not the joint job's rounds)."""
    keys = (
        "threads",
        "warmup",
        "iterations",
        "throughput_warmup",
        "throughput_iterations",
        "batch_sizes",
    )
    return {k: config["timing"][k] for k in keys}


def get_cost_params(wildcards):
    """What the joint timing job of one setting needs: its batch size and rounds, the schemes'
    graphs (which components exist), the features' shape, the reference."""
    timing = config["timing"]
    latency = wildcards.setting == "latency"
    return {
        "batch_size": timing["batch_sizes"][wildcards.setting],
        "rounds": timing["rounds"] if latency else timing["throughput_rounds"],
        "warmup": (
            timing["warmup_rounds"] if latency else timing["throughput_warmup_rounds"]
        ),
        "threads": timing["threads"],
        "schemes": config["policies"]["schemes"],
        "topk": config["policies"]["topk"],
        "path_features": config["policies"]["path_features"],
        "reference": reference_network(config),
    }


def get_scheme_inputs(wildcards):
    """Predictions of the networks of one scheme, keyed by network, the costs of both
    settings and the splits."""
    networks = config["policies"]["schemes"][wildcards.scheme]["networks"]
    return {
        **{f"predictions_{n}": L.predictions(n) for n in networks},
        **{f"costs_{s}": L.costs(s) for s in SETTINGS},
        "splits": L.splits,
    }


def get_policy_params():
    """The policies section without the schemes (each job gets its own scheme)."""
    return {k: v for k, v in config["policies"].items() if k != "schemes"}


def get_runtime_inputs(wildcards):
    """What measuring one scheme's runtime reads: its networks, their predictions, the costs,
    the fitted points and policies and the splits."""
    networks = config["policies"]["schemes"][wildcards.scheme]["networks"]
    return {
        **get_scheme_inputs(wildcards),
        **{f"model_{n}": L.network(n) for n in networks},
        "points": L.policies(wildcards.scheme, "points.parquet"),
        "policies": L.policies(wildcards.scheme, "policies.json"),
    }


def get_policy_results(name, schemes):
    """One table (``points.parquet``, ``nodes.parquet``, ``speedup_at_loss.csv``) of each
    scheme."""
    return [L.policies(scheme, name) for scheme in dict.fromkeys(schemes)]


def get_runtime_results(name):
    """One table of the runtime's measurements of each measured scheme."""
    return [L.runtime(scheme, name) for scheme in RUNTIME_SCHEMES]


# --- the notebooks ---------------------------------------------------------------------------


def get_figure_options(name):
    """A notebook's own config section (``figures.<section>``), as its rule passes it."""
    return figure_options(config, NOTEBOOK_SECTIONS[name])


def get_notebook_inputs(name):
    """The tables notebook ``name`` reads (its template and the plotting module besides)."""
    options = get_figure_options(name)
    if name == "1_networks":
        return {
            "predictions": [L.predictions(n) for n in NETWORKS],
            "costs": L.costs(config["figures"]["networks"]["setting"]),
            "layers": [L.timing(n, "layers.parquet") for n in NETWORKS],
            "splits": L.splits,
        }
    if name == "2_early_exit":
        return {
            "points": L.policies(options["scheme"], "points.parquet"),
            "headline": L.policies(options["scheme"], "speedup_at_loss.csv"),
        }
    if name == "3_network_selection":
        schemes = options["schemes"] + options["compare_schemes"]
        return {
            "points": get_policy_results("points.parquet", schemes),
            "headline": get_policy_results("speedup_at_loss.csv", schemes),
        }
    if name == "4_exit_proportions":
        return {
            "points": get_policy_results("points.parquet", options["schemes"]),
            "nodes": get_policy_results("nodes.parquet", options["schemes"]),
        }
    if name == "5_oracle":
        return {"points": get_policy_results("points.parquet", options["schemes"])}
    if name == "6_summary":
        return {
            "headline": get_policy_results("speedup_at_loss.csv", SCHEMES),
            "robustness": [L.robustness(s) for s in SCHEMES],
            "manifests": [L.predictions(n, "manifest.json") for n in NETWORKS],
            "costs": L.costs(config["policies"]["setting"], "json"),
            "splits": L.splits,
        }
    if name == "7_runtime":
        return {
            kind: get_runtime_results(f"{kind}.parquet")
            for kind in ("speedups", "segments", "examples")
        }
    raise ValueError(f"unknown notebook {name}")


def get_notebook_options(name):
    """A notebook's parameters besides its inputs: its section, and what the summary names."""
    options = get_figure_options(name)
    if name == "1_networks":
        options["networks"] = NETWORKS
    if name in ("4_exit_proportions", "5_oracle"):
        options["confidence"] = config["policies"]["operating_points"]["confidence"]
    if name == "6_summary":
        options.update(
            study=config["study"],
            networks=NETWORKS,
            setting=config["policies"]["setting"],
            losses=config["policies"]["losses"],
            pages=[n for n in figure_notebooks(config) if n != "6_summary"],
        )
    return options


def get_figure_files(name, formats=("png", "svg")):
    """The figures a notebook saves, under results/figures/<notebook>/."""
    names = figure_names(name, get_figure_options(name))
    return [L.figure(name, figure, fmt) for figure in names for fmt in formats]


def get_notebook_figures(name):
    """The figures of a notebook as rule outputs; the PNGs go into Snakemake's report."""
    outputs = []
    for path in get_figure_files(name):
        if path.endswith(".png"):
            path = report(  # (not at the start of a line: Snakemake would read a `report:`)
                path,
                caption=f"../report/{NOTEBOOK_SECTIONS[name]}.rst",
                category=NOTEBOOKS[name][0],
                labels={"figure": Path(path).stem.replace("_", " ")},
            )
        outputs.append(path)
    return outputs


def get_index_pages():
    """The index page's entries: each rendered notebook and its figures (PNG), relative to
    results/."""
    return [
        {
            "name": name,
            "html": str(Path(L.notebook(name, "html")).relative_to(L.root)),
            "notebook": str(Path(L.notebook(name, "ipynb")).relative_to(L.root)),
            "figures": [
                str(Path(path).relative_to(L.root))
                for path in get_figure_files(name, formats=("png",))
            ],
        }
        for name in figure_notebooks(config)
    ]


def get_rendered_notebooks():
    """Every rendered notebook, its executed notebook and its figures, and the index."""
    outputs = []
    for name in figure_notebooks(config):
        outputs += [
            L.notebook(name, "ipynb"),
            L.notebook(name, "html"),
            *get_figure_files(name),
        ]
    return outputs + [L.index]


def get_final_outputs():
    return [
        L.splits,
        *[L.network(n, "training_curve.png") for n in NETWORKS],
        *[L.predictions(n, "manifest.json") for n in NETWORKS],
        *[L.timing(n, "summary.json") for n in NETWORKS],
        *[L.costs(s, ext) for s in SETTINGS for ext in ("parquet", "json")],
        *get_policy_results("speedup_at_loss.csv", SCHEMES),
        *[L.robustness(s) for s in SCHEMES],
        *get_runtime_results("speedups.parquet"),
        *get_rendered_notebooks(),
    ]
