"""Forked children run torch on one thread, as torch's own DataLoader workers do.

A child forked after its parent ran torch on several threads hangs on its first parallel torch operation: the
OpenMP thread pool the parent started does not exist in the child, and the child waits for it (timm's own models
hang the same way). torch's DataLoader sets one thread in every worker it forks (its worker loop calls
``torch.set_num_threads(1)``); ``import timm_sknet`` does the same for every ``fork()`` after it, through
``os.register_at_fork``, so that a model runs in gunicorn's ``--preload`` workers, ``multiprocessing`` fork
workers and plain ``os.fork()`` children. A child that wants more threads must not fork from a parent that ran
torch: spawn it (``multiprocessing`` 'spawn' or 'forkserver'), or build the model after the fork (gunicorn without
``--preload``). OpenVINO and inductor models hang even on one thread; they refuse at once instead
(:mod:`timm_sknet.inference.forking`).
"""
import os

import torch

__all__ = ['one_thread']


def one_thread() -> None:
    """In a forked child: torch on one thread (its intra-op pool; inter-op work is not used by inference)."""
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=one_thread)
