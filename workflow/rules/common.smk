# Config validation and the helpers (get_<thing>) the rules share.
from pathlib import Path

from snakemake.utils import validate

from adaptive_inference.config import (
    ConfigError,
    check_config,
    figure_notebooks,
    figure_options,
    reference_network,
    runtime_schemes,
)
from adaptive_inference.joblog import put_package_on_job_path
from adaptive_inference.notebooks import NOTEBOOKS, figure_names

validate(config, schema="../schemas/config.schema.yaml", set_default=True)
try:
    check_config(config)
except ConfigError as error:
    raise WorkflowError(f"Invalid config: {error}") from None

put_package_on_job_path()

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
NETWORKS = list(config["networks"])
SCHEMES = list(config["policies"]["schemes"])
RUNTIME_SCHEMES = runtime_schemes(config)
# The notebook templates and the plotting module they import are inputs of the notebook rules
# (an edit re-runs them); they live beside the Snakefile, wherever the results are written.
NOTEBOOK_TEMPLATES = Path(workflow.basedir) / "notebooks"
FIGURE_HELPERS = Path(workflow.basedir) / "src" / "adaptive_inference" / "figures.py"
RENDERED = f"{RESULTS}/notebooks"
FIGURES = f"{RESULTS}/figures"
NOTEBOOK_SECTIONS = {name: name.split("_", 1)[1] for name in NOTEBOOKS}  # 2_early_exit: early_exit
FASHION_MNIST_RAW = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


wildcard_constraints:
    network="|".join(NETWORKS),
    scheme="|".join(SCHEMES),
    shard=r"\d+",
    which="eval|train",


def get_dataset_files():
    """The prepared dataset files a rule reads (none for an external image folder)."""
    data = config["data"]
    if data["dataset"] == "fashion_mnist":
        return [f"{data['root']}/FashionMNIST/raw/{name}" for name in FASHION_MNIST_RAW]
    if data["dataset"] == "imagenet":
        sets = ["eval", "train"] if data["imagenet"]["train"] else ["eval"]
        return [f"{data['root']}/imagenet/{which}_index.parquet" for which in sets]
    return []


def get_eval_files():
    """The prepared files of the evaluation set (ImageNet: its index, not the training one's)."""
    return [path for path in get_dataset_files() if not path.endswith("train_index.parquet")]


def get_training_inputs(wildcards):
    """What training a network reads: the dataset; a pre-trained network's exit heads learn on
    the evaluation set's head_train split (or on data.imagenet.train)."""
    inputs = {"data": get_dataset_files()}
    if config["networks"][wildcards.network]["arch"] == "torchvision":
        inputs["splits"] = f"{RESULTS}/splits/eval_splits.parquet"
    return inputs


def get_feature_loader_params(wildcards):
    """How a pre-trained network's pooled features are read for its heads (extraction's batch
    size and workers); nothing for a network trained here, so these never retrain it."""
    if config["networks"][wildcards.network]["arch"] != "torchvision":
        return {}
    return {key: config["extraction"][key] for key in ("batch_size", "num_workers")}


def get_pretrained_num_classes():
    """The classes the pre-trained networks predict (all must agree), or None."""
    from adaptive_inference.config import pretrained_networks

    if not pretrained_networks(config):
        return None
    from adaptive_inference.pretrained import num_classes_of  # imports torchvision.models

    counts = {
        num_classes_of(config["networks"][n]["options"]["model"], config["networks"][n]["options"]["weights"])
        for n in pretrained_networks(config)
    }
    if len(counts) > 1:
        raise WorkflowError(f"Invalid config: the pre-trained networks predict {sorted(counts)} classes; use weights of one label set.")
    return counts.pop()


PRETRAINED_NUM_CLASSES = get_pretrained_num_classes()


def get_data_params():
    """The data section as the rules that read images see it (without the other datasets'
    sections, so that their defaults never re-run anything)."""
    others = {"image_folder", "imagenet"} - {config["data"]["dataset"]}
    return {k: v for k, v in config["data"].items() if k not in ("source", "download", *others)}


def get_network_params(wildcards):
    """A network's own config entry and its merged training section."""
    from adaptive_inference.config import network_training

    entry = config["networks"][wildcards.network]
    return {
        "arch": entry["arch"],
        "options": entry.get("options", {}),
        "training": network_training(config, wildcards.network),
    }


def get_extraction_shards(wildcards):
    """The shard files of one network's extraction (``extraction.shards`` of them)."""
    folder = f"{RESULTS}/predictions/{wildcards.network}/shards"
    return [
        f"{folder}/{index}.{ext}"
        for index in range(config["extraction"]["shards"])
        for ext in ("npy", "parquet", "json")
    ]


def get_scheme_inputs(wildcards):
    """Predictions and exit costs of the networks of one scheme, keyed by network."""
    networks = config["policies"]["schemes"][wildcards.scheme]["networks"]
    inputs = {}
    for network in networks:
        inputs[f"predictions_{network}"] = f"{RESULTS}/predictions/{network}/predictions.parquet"
        inputs[f"exits_{network}"] = f"{RESULTS}/timing/{network}/exits.parquet"
    return inputs


def get_policy_params():
    """The policies section without the schemes (each job gets its own scheme)."""
    return {k: v for k, v in config["policies"].items() if k not in ("schemes", "decision_timing")}


def get_reference():
    return reference_network(config)


def get_figure_options(name):
    """A notebook's own config section (``figures.<section>``), as its rule passes it."""
    return figure_options(config, NOTEBOOK_SECTIONS[name])


def get_notebook_template(name):
    return NOTEBOOK_TEMPLATES / f"{name}.ipynb"


def get_figure_files(name, formats=("png", "svg")):
    """The figures a notebook saves, under results/figures/<notebook>/."""
    names = figure_names(name, get_figure_options(name))
    return [f"{FIGURES}/{name}/{figure}.{fmt}" for figure in names for fmt in formats]


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


def get_policy_results(kind, schemes):
    """One table (points, nodes, speedup_at_loss.csv) of each scheme."""
    filename = "speedup_at_loss.csv" if kind == "headline" else f"{kind}.parquet"
    return [f"{RESULTS}/policies/{scheme}/{filename}" for scheme in dict.fromkeys(schemes)]


def get_runtime_inputs(wildcards):
    """What measuring one scheme's runtime reads: its networks, their predictions and exit
    costs, the decision's cost, the fitted policies and the splits."""
    networks = config["policies"]["schemes"][wildcards.scheme]["networks"]
    return {
        **get_scheme_inputs(wildcards),
        **{f"model_{n}": f"{RESULTS}/networks/{n}/model.pt" for n in networks},
        "policies": f"{RESULTS}/policies/{wildcards.scheme}/policies.pkl",
        "decision": f"{RESULTS}/timing/policy_decision.json",
        "splits": f"{RESULTS}/splits/eval_splits.parquet",
    }


def get_runtime_params():
    """The runtime section without the schemes (a job per scheme), its batch size resolved."""
    runtime = {k: v for k, v in config["runtime"].items() if k != "schemes"}
    runtime["batch_size"] = runtime["batch_size"] or config["timing"]["batch_sizes"]["throughput"]
    return runtime


def get_runtime_results(kind):
    """One table of the runtime's measurements (speedups, segments, examples) of each measured
    scheme."""
    return [f"{RESULTS}/runtime/{scheme}/{kind}.parquet" for scheme in RUNTIME_SCHEMES]


def get_index_pages():
    """The index page's entries: each rendered notebook and its figures (PNG), relative to
    results/."""
    return [
        {
            "name": name,
            "html": f"notebooks/{name}.html",
            "notebook": f"notebooks/{name}.ipynb",
            "figures": [
                str(Path(path).relative_to(RESULTS))
                for path in get_figure_files(name, formats=("png",))
            ],
        }
        for name in figure_notebooks(config)
    ]


def get_rendered_notebooks():
    """Every rendered notebook, its executed notebook and its figures, and the index."""
    outputs = []
    for name in figure_notebooks(config):
        outputs += [f"{RENDERED}/{name}.ipynb", f"{RENDERED}/{name}.html", *get_figure_files(name)]
    return outputs + [f"{RESULTS}/index.html"]


def get_final_outputs():
    return [
        f"{RESULTS}/splits/eval_splits.parquet",
        *expand(f"{RESULTS}/networks/{{network}}/training_curve.png", network=NETWORKS),
        *expand(f"{RESULTS}/predictions/{{network}}/manifest.json", network=NETWORKS),
        *expand(f"{RESULTS}/timing/{{network}}/summary.json", network=NETWORKS),
        *expand(f"{RESULTS}/policies/{{scheme}}/speedup_at_loss.csv", scheme=SCHEMES),
        *get_runtime_results("speedups"),
        *get_rendered_notebooks(),
    ]
