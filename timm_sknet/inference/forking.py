"""Which runtimes survive ``fork()``: a forked child refuses, at once, a runtime its parent ran.

Measured here (tests/test_optimize_concurrency.py): in a child forked after the parent ran an OpenVINO or an
inductor model, calling that model hangs, and so does building a new one of the same runtime in the child
(OpenVINO's thread pool, and the thread pool behind inductor's prepacked CPU kernels, are not rebuilt after
fork). onnxruntime and eager models run in such a child, on the one torch thread that ``import timm_sknet`` sets
in every forked child (:mod:`timm_sknet.after_fork`: on several, torch's own pool hangs). DataLoader workers, ``multiprocessing``'s default start
method on Linux and gunicorn's ``--preload`` all fork, so the refusal names what works instead.
"""
import os
from typing import Dict, Set

from .backends import BackendUnavailable

__all__ = ['FORK_UNSAFE', 'refuse_in_forked_child', 'started']

#: Runtimes that hang a forked child once the parent has run them, and what it is of them that does not survive.
FORK_UNSAFE: Dict[str, str] = {
    'openvino': "OpenVINO's thread pool",
    'inductor': "the thread pool of inductor's compiled CPU kernels",
}

_run_here: Set[str] = set()
_run_before_fork: Set[str] = set()


def _after_fork_in_child() -> None:
    _run_before_fork.update(_run_here)


os.register_at_fork(after_in_child=_after_fork_in_child)


def started(backend: str) -> None:
    """Record that ``backend``'s runtime has run in this process (its children inherit the record)."""
    if backend in FORK_UNSAFE:
        _run_here.add(backend)


def refuse_in_forked_child(backend: str) -> None:
    """Raise :class:`BackendUnavailable` where ``backend`` would hang: a child forked after its parent ran it."""
    if backend not in _run_before_fork:
        return
    raise BackendUnavailable(
        f'a {backend} model cannot run in this forked child process (pid {os.getpid()}): the parent ran '
        f'{backend} before fork(), and {FORK_UNSAFE[backend]} does not survive fork(), so the call would hang. '
        "Build the model in a process that did not inherit it: a 'spawn' or 'forkserver' worker (an OptimizedModel "
        "pickled there is rebuilt on loading, e.g. DataLoader(..., multiprocessing_context='spawn')), or a server "
        'worker that calls optimize() after it starts (gunicorn without --preload). '
        "backend='onnxruntime' and backend='eager' models run after fork(), on one torch thread.")
