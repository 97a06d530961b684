"""Loopback-only networking for the tests, in the test process and in the Python processes it starts.

Every connect to, and every name lookup of, a host that is not loopback (127.0.0.0/8, ::1, localhost) is
refused and recorded, so an attempt fails the test even where the code under test catches the error (a
client falling back to its cache, a retry loop). The test process installs it from conftest.py; child
processes get it as ``sitecustomize`` through :func:`child_environment`, and one that tried exits with status
97 after listing its attempts.
"""
import atexit
import ipaddress
import os
import socket
import sys
from typing import Dict, List

ENV_SWITCH = 'TIMM_SKNET_TESTS_LOOPBACK_ONLY'
GUARD_DIR = os.path.dirname(os.path.abspath(__file__))
EXIT_STATUS = 97

#: what was refused, in order: ('connect' or 'lookup', the address or name)
attempts: List[tuple] = []

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def is_loopback(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host.lower() in ('localhost', 'localhost.localdomain'):
        return True
    try:
        return ipaddress.ip_address(host.split('%')[0]).is_loopback
    except ValueError:
        return False


def _refuse(kind: str, what) -> ConnectionRefusedError:
    attempts.append((kind, what))
    return ConnectionRefusedError(f'tests may only reach loopback; refused {kind} of {what!r}')


def _checked(sock, address) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
        raise _refuse('connect', address)


def _connect(sock, address):
    _checked(sock, address)
    return _real_connect(sock, address)


def _connect_ex(sock, address):
    _checked(sock, address)
    return _real_connect_ex(sock, address)


def _getaddrinfo(host, *args, **kwargs):
    if host is not None and not is_loopback(host):
        raise _refuse('lookup', host)
    return _real_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _getaddrinfo


def child_environment(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` with this guard on for a child Python process (first on PYTHONPATH, as ``sitecustomize``)."""
    path = [GUARD_DIR, *[p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]]
    return {**env, ENV_SWITCH: '1', 'PYTHONPATH': os.pathsep.join(path)}


def _report_at_exit() -> None:
    if attempts:
        sys.stdout.flush()  # os._exit skips the interpreter's own flushing
        sys.stderr.write(f'loopback guard: this process tried to reach {attempts}\n')
        sys.stderr.flush()
        os._exit(EXIT_STATUS)


if __name__ == 'sitecustomize' and os.environ.get(ENV_SWITCH) == '1':
    install()
    atexit.register(_report_at_exit)
