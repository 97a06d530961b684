"""An HTTP service: an image in, the model's top classes or its embedding out as JSON (FastAPI;
``pip install "timm-sknet[serve]"``).

``POST /predict`` takes the image as a multipart field named ``file`` or as the raw request body, and answers
``{"predictions": [{"index", "wordnet_id", "label", "probability"}, ...]}``, most probable first (``?topk=``, 1 to
the number of classes). ``POST /embed`` answers the pooled embedding. ``GET /health`` says the process is up,
``GET /ready`` whether it takes requests (model warm, not draining), ``GET /metrics`` is Prometheus' text.

Each request is admitted or refused at once: at most ``concurrency`` model calls run and ``max_queue`` more
requests wait; past that, and while draining, the answer is 503 with ``Retry-After``, before the upload is read.
An admitted upload is read, decoded and preprocessed in a thread without holding a model slot, so a bad one gets
its 4xx at once: 400 empty or malformed, 413 past the upload size limit, 422 not a readable image or over the
pixel limit (from the header, before any pixel is decoded).
"""
import signal
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data.images import ImageError, read_image
from ..data.images import decode_size as size_to_decode  # create_app's argument has the name
from ..data.labels import class_names, wordnet_ids
from .batching import Batcher
from .metrics import Metrics
from .schema import Embedding, Health, Predictions, Problem, Readiness
from .upload import FIELD, UPLOAD_BODY, read_upload

if TYPE_CHECKING:  # the extra `serve` and PIL are imported where they are used
    import fastapi
    import starlette.requests

__all__ = ['DEFAULT_MAX_PIXELS', 'DEFAULT_MAX_QUEUE', 'DEFAULT_MAX_BATCH', 'DEFAULT_MAX_WAIT_MS', 'DEFAULT_MAX_UPLOAD_BYTES', 'FIELD', 'create_app']

#: the largest upload read (bytes); a camera JPEG is 2-10 MB
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2 ** 20
#: the most pixels decoded (a 48-megapixel photo passes); PIL's own bomb check stops at about 89 million
DEFAULT_MAX_PIXELS = 50_000_000
#: requests that may wait for a model call; past them, 503 (16 x sknet50's ~60 ms on 2 cores: about a second)
DEFAULT_MAX_QUEUE = 16
#: images per model call that ``timm-sknet serve`` gathers from waiting requests: it gained at 16 and 64 clients on
#: every backend measured (benchmarks/results/serve_load.md, docs/serving.md "Under load"). ``create_app``'s own
#: default is 1, since a model of your own may not take batches
DEFAULT_MAX_BATCH = 8
#: with batching on, the longest a request waits for others to join its batch (ms)
DEFAULT_MAX_WAIT_MS = 5
#: seconds a refused client is told to wait
RETRY_AFTER = 1
ROUTES = ('/predict', '/embed', '/health', '/ready', '/metrics')


def _classes(model: nn.Module, transform: Optional[Callable],
             labels: Optional[Sequence[str]]) -> Tuple[Callable, List[str]]:
    """The transform and class names: given, or the model's own from its ``pretrained_cfg``; refused without
    classes."""
    if transform is None or labels is None:
        if getattr(model, 'pretrained_cfg', None) is None:
            raise ValueError(f'{type(model).__name__} has no pretrained_cfg to take the preprocessing and class '
                             'names from; pass transform= and labels= (those of the model it was built from)')
        from timm.data import create_transform, resolve_data_config
        transform = transform or create_transform(**resolve_data_config(model=model))
        labels = labels or class_names(model)
    if not labels:
        raise ValueError(f'{type(model).__name__} has no classifier (num_classes=0 or features_only=True): '
                         'serve a model with its classification head, e.g. timm.create_model(name, pretrained=True) '
                         'without num_classes=0 or features_only')
    return transform, list(labels)


def _embedder(model: nn.Module, embedder: Optional[nn.Module]) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """timm's pooled pre-logits features of ``embedder``, else of ``model`` where it is a timm model."""
    source = embedder if embedder is not None else model
    features: Optional[Callable] = getattr(source, 'forward_features', None)
    head: Optional[Callable] = getattr(source, 'forward_head', None)
    if features is None or head is None:
        return None  # an optimize() result computes the logits only
    device = next(source.parameters()).device  # images arrive on the CPU; the model may be on a GPU
    return lambda x: head(features(x.to(device, non_blocking=True)), pre_logits=True)


class Admission:
    """Who may enter: ``concurrency`` model calls and ``max_queue`` waiting, none while starting or draining."""

    def __init__(self, concurrency: int, max_queue: int, metrics: Metrics):
        import anyio
        self.model_slots, self.concurrency = anyio.CapacityLimiter(concurrency), concurrency
        self.limit = concurrency + max_queue
        self.admitted, self.running, self.metrics = 0, 0, metrics
        self.warm, self.draining = False, False

    @property
    def state(self) -> str:
        return 'draining' if self.draining else 'ready' if self.warm else 'starting'

    @asynccontextmanager
    async def entry(self) -> AsyncIterator[None]:
        from fastapi import HTTPException
        if self.state != 'ready' or self.admitted >= self.limit:
            reason = 'full' if self.state == 'ready' else self.state
            self.metrics.rejected.labels(reason).inc()
            message = {'full': f'the server is full ({self.limit} requests in progress); retry after '
                               f'{RETRY_AFTER} s or on another replica',
                       'draining': 'the server is shutting down; send the request to another replica'}
            raise HTTPException(503, message.get(reason, 'the model is warming up; retry shortly'),
                                headers={'Retry-After': str(RETRY_AFTER)})
        self._count(admitted=1)
        try:
            yield
        finally:
            self._count(admitted=-1)

    def _count(self, admitted: int = 0, running: int = 0) -> None:
        self.admitted, self.running = self.admitted + admitted, self.running + running
        self.metrics.queue.set(self.admitted - self.running)

    async def call(self, function: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
        """``function(x)`` once a model slot is free."""
        async with self.model_slots:
            return await self.run(function, x, 1)

    async def run(self, function: Callable[[torch.Tensor], Any], x: torch.Tensor, images: int) -> Any:
        """``function(x)`` in a worker thread, on a model slot the caller holds; time and batch size measured."""
        import anyio

        def timed() -> Any:
            with torch.inference_mode(), self.metrics.model.time():
                return function(x)
        self._count(running=images)
        self.metrics.batch.observe(images)
        try:
            return await anyio.to_thread.run_sync(timed)
        finally:
            self._count(running=-images)


def drain_on_signals(admission: Admission) -> None:
    """On SIGTERM or SIGINT: refuse new requests at once, then let the server's own handler (uvicorn's graceful
    shutdown) run. Signal handlers can be set in the main thread only; elsewhere the host handles shutdown."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            admission.draining = True
            if callable(previous):
                previous(number, frame)
            else:  # the default action (or none): as if this handler had not been there
                signal.signal(number, previous)
                signal.raise_signal(number)
        signal.signal(sig, handler)


def _observe(app: 'fastapi.FastAPI', metrics: Metrics) -> None:
    """Every answer counted by route and status, and timed; a bad query parameter's 422 as one sentence, as every
    other error's ``detail`` is."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.requests import Request

    @app.exception_handler(RequestValidationError)
    async def one_sentence(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = '; '.join(f'{" ".join(map(str, e["loc"]))}: {e["msg"]}' for e in error.errors())
        return JSONResponse({'detail': f'{problems} (see /docs for the parameters)'}, status_code=422)

    @app.middleware('http')
    async def measure(request: Request, call_next: Callable) -> Any:
        route = request.url.path if request.url.path in ROUTES else 'other'
        start = time.perf_counter()
        response = await call_next(request)
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response


class Service:
    """What the endpoints share: the model and its preprocessing, the classes, the limits, the admission."""

    def __init__(self, model: nn.Module, transform: Callable, labels: List[str], wordnet: Sequence[Optional[str]],
                 embed: Optional[Callable], admission: Admission, max_upload_bytes: int, max_pixels: int,
                 decode_size: Optional[Tuple[int, int]], max_batch: int = 1, max_wait_ms: float = 0):
        self.model, self.transform, self.labels, self.wordnet, self.embed = model, transform, labels, wordnet, embed
        self.admission, self.max_upload_bytes, self.max_pixels = admission, max_upload_bytes, max_pixels
        self.decode_size = decode_size
        self.batchers = {id(f): Batcher(f, admission.model_slots, admission.run, max_batch, max_wait_ms)
                         for f in (model, embed) if f is not None and max_batch > 1}

    async def call(self, function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``function(x)`` on a model slot: alone, or batched with other requests' images."""
        batcher = self.batchers.get(id(function))
        return await (batcher(x) if batcher is not None else self.admission.call(function, x))

    def preprocess(self, data: bytes) -> torch.Tensor:
        from fastapi import HTTPException
        if not data:
            raise HTTPException(400, f'empty upload: send the image as the request body or as the multipart field '
                                     f'{FIELD!r}')
        try:  # ImageTooLarge's message is the limit's own
            return self.transform(read_image(data, self.max_pixels, self.decode_size))[None]
        except ImageError as e:  # not an image, truncated, or over max_pixels
            raise HTTPException(422, str(e)) from None

    async def image(self, request: 'starlette.requests.Request') -> torch.Tensor:
        """The upload decoded and preprocessed in a worker thread, without a model slot."""
        import anyio
        return await anyio.to_thread.run_sync(self.preprocess, await read_upload(request, self.max_upload_bytes))

    @asynccontextmanager
    async def lifespan(self, app: 'fastapi.FastAPI') -> AsyncIterator[None]:
        """Ready once the model has answered a first call; draining from SIGTERM or shutdown on."""
        import anyio
        from PIL import Image
        drain_on_signals(self.admission)
        warm_up = self.transform(Image.new('RGB', (64, 64)))[None]

        def first_call() -> None:
            with torch.inference_mode():
                self.model(warm_up)
        await anyio.to_thread.run_sync(first_call)
        self.admission.warm = True
        yield
        self.admission.draining = True
        for batcher in self.batchers.values():
            batcher.close()


REFUSALS: Dict[Union[int, str], Dict[str, Any]] = {
    code: {'model': Problem, 'description': text} for code, text in (
        (400, 'empty upload, or a malformed multipart body'), (413, 'upload over the size limit'),
        (422, 'not a readable image, over the pixel limit, or a query parameter out of range'),
        (503, "full or draining: retry after the Retry-After header's seconds"))}


def _model_routes(app: 'fastapi.FastAPI', service: Service, topk: int) -> None:
    from fastapi import HTTPException, Query, Request

    @app.post('/predict', response_model=Predictions, responses=REFUSALS, openapi_extra=UPLOAD_BODY)
    async def predict(request: Request, topk: int = Query(topk, ge=1, le=len(service.labels),
                                                          description='classes to answer')) -> Dict[str, Any]:
        """Top classes of the image sent as the multipart field ``file`` or as the raw body."""
        async with service.admission.entry():
            x = await service.image(request)
            probs = (await service.call(service.model, x)).float().softmax(-1)[0]
        values, indices = probs.topk(topk)
        return {'predictions': [dict(index=i, wordnet_id=service.wordnet[i], label=service.labels[i], probability=p)
                                for p, i in zip(values.tolist(), indices.tolist())]}

    @app.post('/embed', response_model=Embedding, openapi_extra=UPLOAD_BODY,
              responses={**REFUSALS, 501: {'model': Problem, 'description': 'the model gives logits only'}})
    async def embedding(request: Request) -> Dict[str, Any]:
        """The pooled embedding of the image (the features the classifier reads)."""
        if service.embed is None:
            raise HTTPException(501, f'{type(service.model).__name__} gives logits only; create the app with '
                                     'embedder=<the timm model it was built from> to serve /embed')
        async with service.admission.entry():
            vector = (await service.call(service.embed, await service.image(request))).float()[0]
        return {'embedding': vector.tolist(), 'dim': vector.numel()}


def _operator_routes(app: 'fastapi.FastAPI', service: Service, metrics: Metrics) -> None:
    from fastapi import Response
    admission = service.admission

    @app.get('/health', response_model=Health)
    def health() -> Dict[str, Any]:
        """Alive (liveness), and what runs the model."""
        return dict(status='ok', classes=len(service.labels), concurrency=admission.concurrency,
                    max_queue=admission.limit - admission.concurrency,
                    runs_as=getattr(service.model, 'description', f'PyTorch {type(service.model).__name__}'))

    @app.get('/ready', response_model=Readiness, responses={503: {'model': Readiness}})
    def ready(response: Response) -> Dict[str, Any]:
        """200 once the model is warm, 503 while starting or draining (readiness)."""
        response.status_code = 200 if admission.state == 'ready' else 503
        return dict(ready=admission.state == 'ready', status=admission.state)

    @app.get('/metrics', response_class=Response)
    def scrape() -> Response:
        """Prometheus' text format."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


def create_app(model: nn.Module, *, transform: Optional[Callable] = None, labels: Optional[Sequence[str]] = None,
               topk: int = 5, concurrency: int = 1, max_queue: int = DEFAULT_MAX_QUEUE,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               embedder: Optional[nn.Module] = None, wordnet: Optional[Sequence[Optional[str]]] = None,
               decode_size: Optional[Tuple[int, int]] = None, max_batch: int = 1,
               max_wait_ms: float = DEFAULT_MAX_WAIT_MS) -> 'fastapi.FastAPI':
    """A FastAPI app that classifies uploaded images with ``model`` (eval mode; plain or from ``optimize``).

    Args:
        model: a classifier; an ``optimize`` result must be safe to call from ``concurrency`` threads at once.
        transform: PIL image to input tensor (default: the model's eval transform from its ``pretrained_cfg``).
        labels: class names by index (default: the model's, as ``timm-sknet predict`` prints them).
        topk: classes per answer when the request does not say (``?topk=``).
        concurrency: model calls at once (worker threads).
        max_queue: requests that may wait for a model call; past them the answer is 503.
        max_upload_bytes: the largest upload.
        max_pixels: the most pixels an image may have.
        embedder: the timm model ``/embed`` runs (default: ``model`` if it is a timm model; an ``optimize`` result
            gives logits only, so pass the model it was built from, or ``/embed`` answers 501).
        wordnet: WordNet ids by index (default: the model's, for an ImageNet model; else null).
        decode_size: (width, height) a JPEG upload is decoded to at least, at the smallest DCT scale that covers it
            (:func:`timm_sknet.data.images.decode_size` of the transform's data config); default: that of the
            model's own eval transform where ``transform`` is not given, else None (decoded in full).
        max_batch: images of waiting requests run as one batch, at most this many (1: each request alone);
            ``model`` and ``embedder`` must take batches.
        max_wait_ms: with ``max_batch`` > 1, the longest a request waits for others to join its batch.
    """
    from fastapi import FastAPI

    for name, value, least in (('concurrency', concurrency, 1), ('topk', topk, 1), ('max_queue', max_queue, 0),
                               ('max_batch', max_batch, 1), ('max_wait_ms', max_wait_ms, 0)):
        if value < least:
            raise ValueError(f'{name} must be >= {least}, got {value}')
    if transform is None and decode_size is None and getattr(model, 'pretrained_cfg', None) is not None:
        from timm.data import resolve_data_config
        decode_size = size_to_decode(resolve_data_config(model=model))
    transform, labels = _classes(model, transform, labels)
    if wordnet is None:
        wordnet = wordnet_ids(embedder if embedder is not None else model) or [None] * len(labels)
    metrics = Metrics()
    service = Service(model, transform, labels, wordnet, _embedder(model, embedder),
                      Admission(concurrency, max_queue, metrics), max_upload_bytes, max_pixels, decode_size,
                      max_batch, max_wait_ms)
    app = FastAPI(title='timm-sknet classifier', description=__doc__.split('\n\n')[1], lifespan=service.lifespan)
    _observe(app, metrics)
    _model_routes(app, service, topk)
    _operator_routes(app, service, metrics)
    return app
