"""Running the service: uvicorn in this process, or in worker processes that each build their own model."""
import contextlib
import os
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING, Any, Iterator, List, Union

if TYPE_CHECKING:
    import fastapi

__all__ = ['ENV_OPTIONS', 'check_port', 'missing_packages', 'run']

#: where ``timm-sknet serve --workers N`` hands its options to each worker process
ENV_OPTIONS = 'TIMM_SKNET_SERVE_OPTIONS'
#: seconds a worker may leave its supervisor's ping unanswered (building and warming a model included) before it
#: is replaced: uvicorn's own 5 s killed workers still importing torch on a busy machine
DEFAULT_WORKER_TIMEOUT = 120
#: seconds in-flight requests get to finish after SIGTERM
DEFAULT_GRACEFUL_TIMEOUT = 30


def missing_packages() -> List[str]:
    """The packages of the ``serve`` extra that are not installed."""
    import importlib.util
    return [name for name, module in (('fastapi', 'fastapi'), ('uvicorn', 'uvicorn'),
                                      ('python-multipart', 'python_multipart'),
                                      ('prometheus-client', 'prometheus_client'))
            if importlib.util.find_spec(module) is None]


def check_port(host: str, port: int) -> None:
    """Raise OSError, with what to do, if ``host:port`` cannot be bound (in use, or not this machine's address);
    bound the way uvicorn binds it (SO_REUSEADDR), then released."""
    if port == 0:
        return
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise OSError(f'cannot listen on {host}:{port} ({e.strerror}); stop what uses it, or pass another '
                          '--port (0 picks a free one)') from None


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several workers: a folder for prometheus_client's multiprocess mode, unless one is given."""
    if workers == 1 or os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
        yield
        return
    folder = tempfile.mkdtemp(prefix='timm-sknet-metrics-')
    os.environ['PROMETHEUS_MULTIPROC_DIR'] = folder
    try:
        yield
    finally:
        del os.environ['PROMETHEUS_MULTIPROC_DIR']
        shutil.rmtree(folder, ignore_errors=True)


def run(app: Union['fastapi.FastAPI', str], host: str = '127.0.0.1', port: int = 8000, workers: int = 1,
        worker_timeout: int = DEFAULT_WORKER_TIMEOUT, graceful_timeout: int = DEFAULT_GRACEFUL_TIMEOUT,
        **options: Any) -> None:
    """Serve ``app`` with uvicorn until SIGTERM or SIGINT; ``workers`` > 1 needs ``app`` as an import string of a
    factory (``'module:function'``), which each worker process calls to build its own model. ``options`` go to
    ``uvicorn.run`` as they are (proxy_headers, forwarded_allow_ips, timeout_keep_alive, backlog, log_level,
    access_log)."""
    import uvicorn
    with _shared_metrics(workers):
        uvicorn.run(app, host=host, port=port, workers=workers, factory=isinstance(app, str),
                    timeout_worker_healthcheck=worker_timeout, timeout_graceful_shutdown=graceful_timeout, **options)
