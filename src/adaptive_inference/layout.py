"""Where every output of a study lives under ``results/``: the one place the layout is written.

The workflow's rules (``workflow/rules/common.smk``) name their outputs with :class:`Layout`, and
:mod:`adaptive_inference.study` reads a finished study back with it, so a path is spelled once.
Torch- and pandas-free: Snakemake imports it while it parses the workflow.

::

    results/
      splits/eval_splits.parquet                    each example's split
      networks/<net>/model.pt, training_curve.{csv,png}
      predictions/<net>/probs.npy, predictions.parquet, manifest.json  (shards/ while sharded)
      timing/<net>/layers.parquet, components.parquet, exits.parquet, summary.json  (per layer)
      costs/<setting>.parquet, <setting>.json       the joint, in-context costs the policies use
      policies/<scheme>/points.parquet, nodes.parquet, speedup_at_loss.csv, policies.json
      robustness/<scheme>.parquet                   fit and read-off repeated over resplits
      runtime/<scheme>/speedups.parquet, segments.parquet, examples.parquet, summary.json
      notebooks/<name>.{ipynb,html}, figures/<name>/<figure>.{png,svg}, index.html
      logs/<rule>/..., benchmarks/<rule>/...
"""

from __future__ import annotations

from dataclasses import dataclass

RUNTIME_TABLES = ("speedups", "segments", "examples")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""Fashion-MNIST's raw IDX files, as torchvision reads them from ``<root>/FashionMNIST/raw``."""


def fashion_mnist_prepared(root: str, train: bool) -> str:
    """The decoded split (uint8 images, int64 labels) that prepare_data writes under the
    dataset's ``root`` and every later job reads (:func:`adaptive_inference.data.fashion_mnist`)."""
    return f"{root}/FashionMNIST/prepared/{'train' if train else 'test'}.pt"


def fashion_mnist_raw(root: str) -> list[str]:
    """The raw IDX files under the dataset's ``root``, where torchvision's ``FashionMNIST``
    reads them."""
    return [f"{root}/FashionMNIST/raw/{name}" for name in FASHION_MNIST_FILES]


def fashion_mnist_files(root: str) -> list[str]:
    """Every file prepare_data writes under the dataset's ``root``: the raw IDX files and the
    two decoded splits."""
    return fashion_mnist_raw(root) + [fashion_mnist_prepared(root, t) for t in (True, False)]


@dataclass(frozen=True)
class Layout:
    """The paths of a study's outputs under ``root`` (strings, as Snakemake wants them)."""

    root: str = "results"

    @property
    def splits(self) -> str:
        return f"{self.root}/splits/eval_splits.parquet"

    def network(self, net: str, name: str = "model.pt") -> str:
        """``model.pt``, ``training_curve.csv`` or ``training_curve.png`` of a network."""
        return f"{self.root}/networks/{net}/{name}"

    def predictions(self, net: str, name: str = "predictions.parquet") -> str:
        """``probs.npy``, ``predictions.parquet`` or ``manifest.json`` of a network."""
        return f"{self.root}/predictions/{net}/{name}"

    def shard(self, net: str, index: int | str, ext: str) -> str:
        """One shard of a sharded extraction (``npy``, ``parquet`` or ``json``)."""
        return f"{self.root}/predictions/{net}/shards/{index}.{ext}"

    def timing(self, net: str, name: str) -> str:
        """The per-layer (Caffe-style) tables of a network: ``layers.parquet``,
        ``components.parquet``, ``exits.parquet``, ``summary.json``."""
        return f"{self.root}/timing/{net}/{name}"

    def costs(self, setting: str, ext: str = "parquet") -> str:
        """The joint timing job's costs of a setting (``parquet``) and its record (``json``)."""
        return f"{self.root}/costs/{setting}.{ext}"

    def policies(self, scheme: str, name: str) -> str:
        """``points.parquet``, ``nodes.parquet``, ``speedup_at_loss.csv`` or ``policies.json``."""
        return f"{self.root}/policies/{scheme}/{name}"

    def robustness(self, scheme: str) -> str:
        return f"{self.root}/robustness/{scheme}.parquet"

    def runtime(self, scheme: str, name: str) -> str:
        """``speedups.parquet``, ``segments.parquet``, ``examples.parquet`` or
        ``summary.json``."""
        return f"{self.root}/runtime/{scheme}/{name}"

    def notebook(self, name: str, ext: str) -> str:
        """A rendered notebook: ``ipynb`` (executed) or ``html``."""
        return f"{self.root}/notebooks/{name}.{ext}"

    def figure(self, notebook: str, stem: str, ext: str) -> str:
        return f"{self.root}/figures/{notebook}/{stem}.{ext}"

    @property
    def index(self) -> str:
        return f"{self.root}/index.html"

    def log(self, rule: str, name: str = "") -> str:
        """A job's log: ``logs/<rule>.log``, or ``logs/<rule>/<name>.log``."""
        return f"{self.root}/logs/{rule}/{name}.log" if name else f"{self.root}/logs/{rule}.log"

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{name}.tsv"
