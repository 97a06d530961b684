"""Benchmarks of the sknets against timm's own SK implementation with the same weights, on this machine.

One runner family, as timm's ``benchmark.py``, one module a runner: :class:`~.timing.BenchmarkRunner` holds the
pair (timm's model and ours with identical weights, so only the implementation differs), the machine's description
and peak, and the timing loop; each subclass measures one thing and returns a :class:`~.report.Report`, which
:func:`~.report.write_report` writes as JSON and markdown.

* :class:`~.inference.InferenceRunner` (``inference``): every backend and precision of ``optimize`` for both models (timm's
  model run as its users can run it: it has no BatchNorm fold of its own), the peer comparison;
* :class:`~.eager.EagerRunner` (``eager``): eager inference (folded) and training steps with their peak memory;
* :class:`~.backbone.BackboneRunner` (``backbone``): ``features_only`` at 640 px as detectors run it: eager, plain and folded,
  fp32 and under bf16 autocast, in both memory layouts;
* :class:`~.concurrency.ConcurrencyRunner` (``concurrency``): one optimized model called from 1, 2 and 4 threads at once, per
  backend (ours only: the question is how a runtime shares the cores, not ours against timm's);
* :func:`~.int8.int8_accuracy` (``int8-accuracy``): what int8 costs in accuracy, where that can be measured offline;
* :class:`~.serve.ServeRunner` (``serve``): the HTTP service under concurrent clients, latency p50 / p99 and throughput,
  for each way of sharing the cores between worker processes, concurrent calls and runtime threads;
* :class:`~.load.LoadRunner` (``serve-load``): the HTTP service under 1 to 64 clients per backend, without and with
  batching across requests, against LitServe serving the same model.

Timed calls alternate between everything measured (A B C A B C ...) so that the machine's noise hits all alike;
the figure is the median. The peak is the best matrix-product rate (``torch.mm``) of a few shapes, per dtype,
measured in the same run. ``timm-sknet bench <runner>`` runs one; ``benchmarks/run.sh`` runs them all into
``benchmarks/results/``."""
from .backbone import BackboneRunner
from .concurrency import ConcurrencyRunner
from .eager import EagerRunner
from .inference import InferenceRunner
from .int8 import int8_accuracy
from .load import LoadRunner
from .report import Report, markdown, write_report
from .serve import ServeRunner

__all__ = ['RUNNERS', 'Report', 'int8_accuracy', 'markdown', 'write_report']

#: the runners by the name ``timm-sknet bench <name>`` takes
RUNNERS = {r.name: r for r in (InferenceRunner, EagerRunner, BackboneRunner, ConcurrencyRunner, ServeRunner,
                                    LoadRunner)}
