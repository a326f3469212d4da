# Config validation and the helpers (get_<thing>) the rules share.
from pathlib import Path

from snakemake.utils import validate

from adaptive_inference.config import (
    ConfigError,
    check_config,
    figure_notebooks,
    figure_options,
    reference_network,
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


def get_dataset_files():
    """The prepared dataset files a rule reads (none for an external image folder)."""
    if config["data"]["dataset"] == "fashion_mnist":
        root = config["data"]["root"]
        return [f"{root}/FashionMNIST/raw/{name}" for name in FASHION_MNIST_RAW]
    return []


def get_data_params():
    """The data section as the rules that read images see it."""
    return {k: v for k, v in config["data"].items() if k not in ("source", "download")}


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
        *get_rendered_notebooks(),
    ]
