"""``serve-load``: the HTTP service under 1, 4, 16 and 64 clients, per backend, without and with batching across
requests, against LitServe serving the same model (requests/s, p50, p99; any answer but 200 or 503 is an error).
"""
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

from .report import Report
from .serve import Load, jpeg, load_clients, serving_process
from .timing import describe_machine

__all__ = ['LoadRunner', 'litserve_process']


@contextlib.contextmanager
def litserve_process(arguments: Sequence[str], env: Optional[Dict[str, str]] = None,
                     timeout: float = 300) -> Iterator[str]:
    """LitServe serving the model (:mod:`timm_sknet.bench.litserve_app` ``ARGUMENTS``) in a child process group of
    its own; yields its URL once ``/health`` answers 200, then stops the group. Raises RuntimeError if it does not
    start."""
    import httpx2
    with socket.socket() as sock:  # LitServe takes no port 0
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    log = tempfile.TemporaryFile('w+')
    proc = subprocess.Popen([sys.executable, '-m', 'timm_sknet.bench.litserve_app', *arguments, '--port', str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f'{url}/health', timeout=10).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f'LitServe did not start:\n{log.read()[-3000:]}')
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its API server and inference worker processes too
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class LoadRunner:
    """``timm-sknet serve`` (one worker, one call at a time on every core: the default) without batching and with
    ``--max-batch``, and LitServe around the same ``optimize`` result with its own batching of the same size, per
    backend, each in its own process(es), loaded by closed-loop clients (threads of this process, each sending its
    next request on the answer to its last) in alternating rounds. ``--max-queue`` is raised to the most clients,
    as LitServe has no bound: every request is served, none refused."""
    name = 'serve-load'

    def __init__(self, our_model: str = 'sknet50', backends: Sequence[str] = ('eager', 'onnxruntime', 'openvino'),
                 image_size: Optional[int] = None, clients: Sequence[int] = (1, 4, 16, 64), seconds: float = 10,
                 rounds: int = 2, max_batch: int = 8, max_wait_ms: float = 5, quick: bool = False,
                 env: Optional[Dict[str, str]] = None, log: Callable[[str], None] = print):
        if quick:  # proves it runs, measures nothing
            image_size, backends, clients, seconds, rounds = image_size or 64, backends[:1], (1, 4), 0.5, 1
        self.model, self.image_size, self.quick = our_model, image_size or 224, quick
        self.backends = [b for b in backends if b == 'eager' or importlib.util.find_spec(b) is not None]
        self.clients, self.seconds, self.rounds = tuple(clients), seconds, rounds
        self.max_batch, self.max_wait_ms, self.env, self.log = max_batch, max_wait_ms, env, log

    def _servers(self, backend: str) -> List[Tuple[str, Callable[[], ContextManager[str]]]]:
        common = ['--model', self.model, '--backend', backend, '--img-size', str(self.image_size)]
        serve = [*common, '--max-queue', str(max(self.clients)), '--no-access-log']
        batch = ['--max-batch', str(self.max_batch), '--max-wait-ms', str(self.max_wait_ms)]
        servers: List[Tuple[str, Callable[[], ContextManager[str]]]] = [
            ('timm-sknet serve --max-batch 1', lambda: serving_process([*serve, '--max-batch', '1'], self.env)),
            (f'timm-sknet serve --max-batch {self.max_batch}', lambda: serving_process([*serve, *batch], self.env))]
        if importlib.util.find_spec('litserve') is not None:
            servers.append((f'LitServe, batch {self.max_batch}',
                            lambda: litserve_process([*common, *batch], self.env)))
        return servers

    def _measure(self, backend: str, image: bytes) -> List[Dict]:
        rows = []
        servers = self._servers(backend)
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(start()) for _, start in servers]
            for clients in self.clients:
                loads = [Load() for _ in servers]
                for url in urls:  # warm-up: every connection, and the runtime's batch sizes
                    load_clients(url, image, clients, clients)
                for _ in range(self.rounds):
                    for load, url in zip(loads, urls):
                        load += load_clients(url, image, clients, seconds=self.seconds / self.rounds)
                for (name, _), load in zip(servers, loads):
                    rows.append(dict(backend=backend, server=name, clients=clients, **load.summary()))
                    self.log(f'  {backend}, {name}, {clients} clients: {rows[-1]["requests_per_s"]:.1f} requests/s, '
                             f'p50 {rows[-1]["p50_ms"]:.0f} ms, p99 {rows[-1]["p99_ms"]:.0f} ms, '
                             f'{rows[-1]["errors"]} errors')
        return rows

    def run(self) -> Report:
        image, load_before, rows = jpeg(), os.getloadavg(), []
        for backend in self.backends:
            rows += self._measure(backend, image)
        load_after = os.getloadavg()
        title = (f'HTTP service under load: {self.model}, {self.image_size} px, a 640x480 JPEG per request, '
                 f'{self.seconds:g} s of closed-loop clients per row in {self.rounds} alternating rounds; load average (1, 5, '
                 f'15 min) {", ".join(f"{x:.1f}" for x in load_before)} before, '
                 f'{", ".join(f"{x:.1f}" for x in load_after)} after (other processes shared the cores when above 0)')
        report = Report(title, describe_machine(), {'load': rows})
        errors = [r for r in rows if r['errors']]
        if errors:  # a 503 is the server's answer when full; anything else is a failure of the server under test
            raise RuntimeError('answers other than 200 and 503 under load: ' + '; '.join(
                f'{r["backend"]}, {r["server"]}, {r["clients"]} clients: {r["errors"]}' for r in errors))
        return report
