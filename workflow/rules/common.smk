# Config validation and the helpers (get_<thing>) the rules share.
from pathlib import Path

from snakemake.utils import validate

from adaptive_inference.config import ConfigError, check_config, reference_network
from adaptive_inference.joblog import put_package_on_job_path

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
FASHION_MNIST_RAW = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


wildcard_constraints:
    network="|".join(NETWORKS),
    scheme="|".join(SCHEMES),


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


def get_final_outputs():
    return [
        f"{RESULTS}/splits/eval_splits.parquet",
        *expand(f"{RESULTS}/networks/{{network}}/training_curve.png", network=NETWORKS),
        *expand(f"{RESULTS}/predictions/{{network}}/manifest.json", network=NETWORKS),
        *expand(f"{RESULTS}/timing/{{network}}/summary.json", network=NETWORKS),
        *expand(f"{RESULTS}/policies/{{scheme}}/speedup_at_loss.csv", scheme=SCHEMES),
    ]
