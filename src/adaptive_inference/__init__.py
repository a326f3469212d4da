"""Adaptive inference: a reproducible study of Bolukbasi et al., "Adaptive Neural Networks for
Efficient Inference" (ICML 2017).

Modules, one job each: ``data`` (datasets), ``splits`` (evaluation-set splits), ``models`` (the
multi-exit network family), ``training``, ``extraction`` (per-example predictions at every exit),
``timing`` (Caffe-style per-layer timing), ``decision`` (a policy decision as tensor operations,
and its cost), ``graph`` (DAGs of stages), ``policies`` (the paper's learned policies),
``baselines`` (uniform, cascade, oracle, single), ``sweep`` (budget sweeps
and their tables), ``figures`` (the notebooks' style and plotting helpers), ``notebooks``
(papermill runs, HTML pages, the index), ``config`` (config checks), ``io`` (atomic outputs),
``joblog`` (job logs).
"""

__version__ = "0.1.0"
