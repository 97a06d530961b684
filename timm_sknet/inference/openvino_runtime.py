"""OpenVINO models run from many threads, and carried to other processes as their IR.

An OpenVINO infer request runs one inference at a time (a second call on a busy one raises "Infer Request is
busy"), and ``AsyncInferQueue`` has one callback for all its users. So every call takes requests of its own from
a pool (:class:`RequestPool`), and gives them back when it has read their outputs: concurrent calls never share a
request, and a lone caller reuses the same requests call after call, as fast as one shared request.

One ``ov.Core`` serves the whole process (:func:`core`). Each Core loads its own CPU plugin, which sets the
calling thread's alternate signal stack when it starts and restores the one it found when it is destroyed; with
Cores created and destroyed out of order, the main thread was left with a freed signal stack, and the next
signal Python handles there (SIGCHLD, when DataLoader workers exit) crashed the process (seen here with
OpenVINO 2026.4, in gdb: SIGSEGV from the kernel while delivering a signal, after the plugin's sigaltstack calls).
"""
import queue
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import numpy as np

__all__ = ['OpenVINOInfer', 'PortableOVModel', 'RequestPool', 'core']

_core: Any = None
_core_lock = threading.Lock()


def core() -> Any:
    """This process's ``ov.Core`` (created on first use; ``Core`` methods are safe to call from threads)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov
            _core = ov.Core()
        return _core


class RequestPool:
    """Idle infer requests of one compiled model; :meth:`take` lends ``count`` of them to one caller."""

    def __init__(self, compiled: Any):
        self._compiled = compiled
        self._idle: 'queue.SimpleQueue[Any]' = queue.SimpleQueue()

    @contextmanager
    def take(self, count: int) -> Iterator[List[Any]]:
        requests = []
        for _ in range(count):
            try:
                requests.append(self._idle.get_nowait())
            except queue.Empty:
                requests.append(self._compiled.create_infer_request())  # CompiledModel is thread-safe
        yield requests  # on an exception the requests are dropped: they may still be running
        for request in requests:
            self._idle.put(request)


class OpenVINOInfer:
    """Batch 1 as one latency-tuned request; larger batches one image per request, on one stream per core.

    On the 2-core CPUs this was measured on, a batch of 8 as one request ran at 0.9x the rate of batch 1
    (its activations outgrow the cache); per-image requests on two streams ran 1.1-1.5x faster than the
    one request, for f32, bf16 and int8 alike (`timm-sknet bench inference`).
    """

    def __init__(self, ov_model: Any, hint: str):
        import torch
        self._model, self._hint, self._threads = ov_model, hint, torch.get_num_threads()
        latency = core().compile_model(ov_model, 'CPU', {
            'INFERENCE_PRECISION_HINT': hint, 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_NUM_THREADS': self._threads})
        self._latency = RequestPool(latency)
        self._outputs = len(latency.outputs)
        self._streams: 'RequestPool | None' = None
        self._compiling = threading.Lock()

    def _stream_pool(self) -> RequestPool:
        with self._compiling:  # compiled once, on the first batch, whichever thread brings it
            if self._streams is None:
                self._streams = RequestPool(core().compile_model(self._model, 'CPU', {
                    'INFERENCE_PRECISION_HINT': self._hint, 'PERFORMANCE_HINT': 'THROUGHPUT',
                    'NUM_STREAMS': self._threads, 'INFERENCE_NUM_THREADS': self._threads}))
            return self._streams

    def _read(self, request: Any) -> List[np.ndarray]:
        return [request.get_output_tensor(i).data.copy() for i in range(self._outputs)]

    def __call__(self, x: np.ndarray) -> List[np.ndarray]:
        if len(x) == 1:
            with self._latency.take(1) as (request,):
                request.infer({0: x})
                return self._read(request)
        parts: List[List[np.ndarray]] = []
        with self._stream_pool().take(min(len(x), self._threads)) as requests:
            # image i runs on request i % k; before a request takes its next image, its last one is read
            for i in range(len(x) + len(requests)):
                request = requests[i % len(requests)]
                if i >= len(requests):
                    request.wait()
                    parts.append(self._read(request))
                if i < len(x):
                    request.start_async({0: x[i:i + 1]})
        return [np.concatenate([p[k] for p in parts]) for k in range(self._outputs)]


class PortableOVModel:
    """An ``ov.Model`` that pickles as its IR (``model.xml`` + ``model.bin``, weights as they are): OpenVINO's own
    objects do not pickle, and the IR is the form OpenVINO itself saves and reads back unchanged."""

    def __init__(self, model: Any):
        self.model = model

    def __reduce__(self) -> Tuple[Callable[[bytes, bytes], 'PortableOVModel'], Tuple[bytes, bytes]]:
        import openvino as ov
        with tempfile.TemporaryDirectory() as tmp:
            ov.save_model(self.model, str(Path(tmp) / 'model.xml'), compress_to_fp16=False)
            return _read_ir, ((Path(tmp) / 'model.xml').read_bytes(), (Path(tmp) / 'model.bin').read_bytes())


def _read_ir(xml: bytes, weights: bytes) -> PortableOVModel:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / 'model.xml').write_bytes(xml)
        (Path(tmp) / 'model.bin').write_bytes(weights)
        model = core().read_model(str(Path(tmp) / 'model.xml'))
        return PortableOVModel(model)
