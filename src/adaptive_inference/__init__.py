"""Adaptive inference: a reproducible study of Bolukbasi et al., "Adaptive Neural Networks for
Efficient Inference" (ICML 2017). The method, the decisions and the unknowns: docs/method.md.

Modules, one job each, in the order a study runs (a module imports only modules above it):

* ``io`` (atomic outputs), ``joblog`` (job logs), ``errors`` (the data's errors), ``layout``
  (where every output lives under ``results/``), ``family`` (the default family as data),
  ``config`` (config checks and per-rule sections);
* ``device`` (devices, loaders, determinism, allocator, environment record), ``models`` (the
  multi-exit network and the default family), ``imagenet`` / ``data`` (datasets), ``splits``
  (evaluation-set splits), ``training`` (the family's recipe), ``pretrained`` (torchvision's
  classifiers with exit heads), ``networks`` (build, save, load);
* ``decision`` (a node's features and linear rule, as NumPy and as tensors), ``extraction``
  (per-example predictions at every exit), ``timing`` (Caffe-style per-layer timing), ``costs``
  (the costs the policies use, as data);
* ``graph`` (DAGs of stages and routing), ``policies`` (the paper's learned policies),
  ``baselines`` (uniform, cascade, oracle, single), ``readoff`` (operating points chosen on
  validation), ``sweep`` (budget sweeps and their tables), ``robustness`` (resplits);
* ``segments`` (the runtime's computations), ``runtime`` (the engine: batch 1 and rebatched),
  ``cuda_graphs`` (segments replayed as CUDA graphs), ``cost_timing`` (the joint, in-context
  timing of every component), ``study`` (a finished study read back), ``runtime_measure``
  (measured against predicted), ``reproducibility`` (two finished runs side by side);
* ``figures`` (the notebooks' style and plotting helpers), ``notebooks`` (papermill runs, HTML
  pages, the index).
"""

__version__ = "0.1.0"
