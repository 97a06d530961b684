"""``serve``: the HTTP service under concurrent clients (latency p50 / p99, throughput) per way of sharing the cores."""
import contextlib
import io
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .report import Report
from .timing import describe_machine

__all__ = ['Load', 'ServeRunner', 'jpeg', 'load_clients', 'serving_process']


@contextlib.contextmanager
def serving_process(arguments: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 300,
                    log: Optional[List[str]] = None, stop: int = signal.SIGINT) -> Iterator[str]:
    """``timm-sknet serve ARGUMENTS --port 0`` in a child process; yields its URL once it is ready, then stops it
    with ``stop`` (SIGINT, as Ctrl+C; SIGTERM, as a process manager). Its stderr lines are appended to ``log``.
    Raises RuntimeError if it does not start, or does not end cleanly."""
    import httpx2
    proc = subprocess.Popen([sys.executable, '-m', 'timm_sknet', 'serve', *arguments, '--port', '0'],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: 'queue.Queue[Optional[str]]' = queue.Queue()

    def read(stream: IO[str]) -> None:  # to its end: a full pipe would block the server
        for line in stream:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, args=(proc.stderr,), daemon=True).start()
    try:
        deadline, seen = time.monotonic() + timeout, log if log is not None else []
        seen.append('')
        while 'Uvicorn running on' not in seen[-1]:  # printed once it has bound the port
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # it ended (its log is whole), or the time is up
                waited = f' within {timeout:.0f} s' if time.monotonic() > deadline else ''
                raise RuntimeError(f'timm-sknet serve did not start{waited}:\n' + ''.join(seen))
            seen.append(line)
        url = seen[-1].split('Uvicorn running on ', 1)[1].split()[0]
        while True:  # with --workers, each worker listens once it has built and warmed its model
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f'{url}/ready', timeout=timeout).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'timm-sknet serve bound {url} but no worker answered')
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f'timm-sknet serve did not stop within 60 s of {signal.Signals(stop).name}') from None
        with contextlib.suppress(queue.Empty):  # the rest of its log, to its end
            while (line := lines.get(timeout=5)) is not None:
                seen.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f'timm-sknet serve ended with status {proc.returncode}')


def jpeg() -> bytes:
    """The benchmarks' request: a 640x480 JPEG of a sample image (so decoding and resizing count)."""
    from PIL import Image

    from ..data.images import SAMPLES_DIR
    out = io.BytesIO()
    with Image.open(sorted(SAMPLES_DIR.glob('*.png'))[0]) as image:
        image.convert('RGB').resize((640, 480)).save(out, 'JPEG', quality=90)
    return out.getvalue()


@dataclass
class Load:
    """What clients saw: per request its latency (s) and HTTP status, and the wall time (s) they took together."""
    timings: List[Tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0

    def __iadd__(self, other: 'Load') -> 'Load':
        self.timings += other.timings
        self.seconds += other.seconds
        return self

    def summary(self) -> Dict[str, Any]:
        """requests, failed (not 200), of them refused (503: full) and errors (anything else: 0 for a connection
        that failed), p50 / p99 latency in ms, and requests per second."""
        ms = sorted(1000 * t for t, _ in self.timings)
        statuses = [status for _, status in self.timings]
        return dict(requests=len(ms), failed=sum(status != 200 for _, status in self.timings),
                    refused=statuses.count(503), errors=sum(status not in (200, 503) for status in statuses),
                    p50_ms=statistics.median(ms), p99_ms=ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
                    requests_per_s=len(ms) / self.seconds)


def load_clients(url: str, image: bytes, clients: int, requests: int = 0, seconds: float = 0) -> Load:
    """``clients`` threads, each with its own connection, post ``image`` to ``url``/predict, each sending its next
    request on the answer to its last, until ``requests`` were answered, or else until ``seconds`` have passed
    (then every client sends at least one; status 0: the connection failed)."""
    import httpx2
    deadline = time.perf_counter() + seconds

    def client(n: int) -> List[Tuple[float, int]]:
        timings: List[Tuple[float, int]] = []
        with httpx2.Client(timeout=300) as http:
            while len(timings) < n if requests else not timings or time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    status = http.post(f'{url}/predict',
                                       files={'file': ('image.jpg', image, 'image/jpeg')}).status_code
                except httpx2.TransportError:
                    status = 0
                timings.append((time.perf_counter() - start, status))
        return timings

    shares = [requests // clients + (i < requests % clients) for i in range(clients)] if requests else [0] * clients
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        timings = [t for part in pool.map(client, shares) for t in part]
    return Load(timings, time.perf_counter() - start)


class ServeRunner:
    """``timm-sknet serve`` under concurrent clients (latency p50 / p99, throughput), for each way of sharing the
    cores: worker processes x model calls at once per process x runtime threads per call.

    Every setup is served at once, each by its own ``timm-sknet serve`` process as users run it (an idle server
    takes no CPU); the clients, threads of this process posting a 640x480 JPEG (so decoding and resizing count),
    load one server at a time, in rotation over ``rounds``, so that the machine's noise hits all alike.
    """
    name = 'serve'

    def __init__(self, our_model: str = 'sknet50', backend: str = 'eager', image_size: Optional[int] = None,
                 clients: Sequence[int] = (1, 2, 4), requests: int = 96, rounds: int = 3,
                 setups: Optional[Sequence[Tuple[int, int, int]]] = None, quick: bool = False,
                 env: Optional[Dict[str, str]] = None, log: Callable[[str], None] = print):
        cores = torch.get_num_threads()
        default = [(1, 1, cores), (1, cores, 1), (cores, 1, 1)]  # (workers, concurrency, threads)
        if quick:  # proves it runs, measures nothing
            image_size, clients, requests, rounds, default = image_size or 64, (1, 2), 4, 2, default[:1]
        self.model, self.backend, self.image_size, self.quick = our_model, backend, image_size or 224, quick
        self.clients, self.requests, self.rounds = tuple(clients), requests, rounds
        self.setups, self.env, self.log = list(setups or default), env, log

    def _arguments(self, workers: int, concurrency: int, threads: int) -> List[str]:
        return ['--model', self.model, '--backend', self.backend, '--img-size', str(self.image_size),
                '--workers', str(workers), '--concurrency', str(concurrency), '--threads', str(threads)]

    def run(self) -> Report:
        image, rows, load_before = jpeg(), [], os.getloadavg()[0]
        names = [f'{w} worker(s) x {c} call(s) x {t} thread(s)' for w, c, t in self.setups]
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(serving_process(self._arguments(*setup), self.env)) for setup in self.setups]
            for clients in self.clients:
                loads = {name: Load() for name in names}
                for url in urls:  # warm-up: every worker process and every connection
                    load_clients(url, image, clients, 2 * clients)
                for _ in range(self.rounds):
                    for name, url in zip(names, urls):
                        loads[name] += load_clients(url, image, clients, max(1, self.requests // self.rounds))
                for name, load in loads.items():
                    rows.append(dict(setup=name, clients=clients, **load.summary()))
                    self.log(f'  {name}, {clients} clients: {rows[-1]["requests_per_s"]:.1f} requests/s, '
                             f'p50 {rows[-1]["p50_ms"]:.0f} ms, p99 {rows[-1]["p99_ms"]:.0f} ms')
        title = (f'HTTP service (timm-sknet serve): {self.model}, {self.backend}, {self.image_size} px, a 640x480 '
                 f'JPEG per request, {self.requests} timed requests per row in {self.rounds} alternating rounds; '
                 f'load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share '
                 f'the cores when it is above 0)')
        return Report(title, describe_machine(), {'latency and throughput': rows})
