"""The suite's promise that no test reaches a host other than loopback, checked on the guard itself."""
import socket
import subprocess
import sys

import pytest
from loopback_guard import sitecustomize as loopback_guard

OUTSIDE = ('192.0.2.1', 443)  # TEST-NET-1: documentation-only, never routed


def test_connects_and_lookups_outside_loopback_are_refused_and_recorded():
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match='only reach loopback'):
        sock.connect(OUTSIDE)
    with pytest.raises(ConnectionRefusedError, match='only reach loopback'):
        socket.getaddrinfo('huggingface.co', 443)
    recorded = list(loopback_guard.attempts)
    del loopback_guard.attempts[:]  # recorded on purpose: not this test's failure
    assert recorded == [('connect', OUTSIDE), ('lookup', 'huggingface.co')]


def test_loopback_stays_reachable():
    with socket.socket() as server:
        server.bind(('127.0.0.2', 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert socket.getaddrinfo('localhost', 80) and not loopback_guard.attempts


def test_a_child_process_that_swallows_the_refusal_still_fails():
    code = ('import socket\ntry:\n    socket.create_connection(("192.0.2.1", 443), timeout=1)\n'
            'except OSError:\n    pass\nprint("carried on")')
    env = loopback_guard.child_environment({'PATH': '', 'PYTHONPATH': ''})
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == loopback_guard.EXIT_STATUS and 'carried on' in proc.stdout
    assert "'192.0.2.1'" in proc.stderr
