"""Shared test setup: deterministic seeds and a guard that no test reaches a host other than loopback."""
import os
import socket

import pytest

# The Hub client reads these once at import; make sure no test can talk to the real Hub.
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
os.environ.setdefault('HF_HUB_DISABLE_IMPLICIT_TOKEN', '1')

import torch  # noqa: E402

import timm_sknet  # noqa: E402,F401  (registers the models before timm lookups)

_LOOPBACK = ('127.', '::1', 'localhost')
_real_connect = socket.socket.connect


def _loopback_only_connect(sock, address):
    if sock.family not in (socket.AF_INET, socket.AF_INET6):  # unix sockets (multiprocessing) stay local
        return _real_connect(sock, address)
    host = address[0]
    if not host.startswith(_LOOPBACK):
        raise ConnectionRefusedError(f'tests may only connect to loopback, not {address!r}')
    return _real_connect(sock, address)


@pytest.fixture(autouse=True)
def _no_outside_network(monkeypatch):
    monkeypatch.setattr(socket.socket, 'connect', _loopback_only_connect)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
