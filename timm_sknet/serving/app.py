"""An HTTP service: an image in, the model's top-5 classes out as JSON (FastAPI; ``pip install "timm-sknet[serve]"``).

``POST /predict`` takes the image as a multipart field named ``file`` or as the raw request body, and answers
``{"predictions": [{"label", "index", "probability"}, ...]}``, most probable first. ``GET /health`` says it is up
and what runs the model. A bad upload gets a 4xx with ``{"detail": "<what was wrong and what to do>"}``: 400 for an
empty body or a missing ``file`` field, 413 past the upload size limit, 422 for bytes that are not a readable image
or have more pixels than the limit (checked from the header, before any pixel is decoded).

The endpoint is ``async``: it reads the upload on the event loop, then decodes, preprocesses and runs the model in
a worker thread, at most ``concurrency`` at once (an anyio limiter of its own, so waiting requests hold no thread).
``timm-sknet serve`` runs it with uvicorn; docs/serving.md says how to size workers, concurrency and threads.
"""
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..data.images import ImageError, read_image
from ..data.images import decode_size as size_to_decode  # create_app's argument has the name
from ..data.labels import class_names, top_k

if TYPE_CHECKING:  # the extra `serve` and PIL are imported where they are used
    import fastapi
    import starlette.requests

__all__ = ['DEFAULT_MAX_PIXELS', 'DEFAULT_MAX_UPLOAD_BYTES', 'FIELD', 'create_app']

#: the largest upload read (bytes); a camera JPEG is 2-10 MB
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2 ** 20
#: the most pixels decoded (a 48-megapixel photo passes); PIL's own bomb check stops at about 89 million
DEFAULT_MAX_PIXELS = 50_000_000
#: the multipart field that holds the image (``curl -F file=@cat.jpg``)
FIELD = 'file'


Size = Optional[Tuple[int, int]]


def _default_preprocessing(model: nn.Module, transform: Optional[Callable], labels: Optional[Sequence[str]],
                           size: Size) -> Tuple[Callable, Sequence[str], Size]:
    """The model's own eval transform (with its decode size) and class names where it has a ``pretrained_cfg`` (an
    optimized model has not)."""
    if transform is not None and labels is not None:
        return transform, labels, size
    if getattr(model, 'pretrained_cfg', None) is None:
        raise ValueError(f'{type(model).__name__} has no pretrained_cfg to take the preprocessing and class names '
                         'from; pass transform= and labels= (those of the model it was built from)')
    from timm.data import create_transform, resolve_data_config
    if transform is None:
        config = resolve_data_config(model=model)
        transform, size = create_transform(**config), size or size_to_decode(config)
    return transform, labels or class_names(model), size


async def _read_upload(request: 'starlette.requests.Request', max_bytes: int) -> bytes:
    """The image's bytes: the multipart field ``file`` or the whole body, refused past ``max_bytes``."""
    from fastapi import HTTPException
    from starlette.requests import Request

    too_large = HTTPException(413, f'upload larger than the limit of {max_bytes:,} bytes; send a smaller image')
    if int(request.headers.get('content-length') or 0) > max_bytes:
        raise too_large  # refused before reading it
    body, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a chunked upload has no Content-Length
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        body.append(chunk)
    data = b''.join(body)
    if not request.headers.get('content-type', '').startswith('multipart/form-data'):
        return data

    async def replay() -> Dict[str, Any]:
        return {'type': 'http.request', 'body': data, 'more_body': False}
    async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
        upload = form.get(FIELD)
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, f'no file in the multipart field {FIELD!r} (got fields: '
                                     f'{", ".join(form.keys()) or "none"}); send it as curl -F {FIELD}=@image.jpg')
        return await upload.read()


def create_app(model: nn.Module, *, transform: Optional[Callable] = None, labels: Optional[Sequence[str]] = None,
               topk: int = 5, concurrency: int = 1, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, decode_size: Size = None) -> 'fastapi.FastAPI':
    """A FastAPI app that classifies uploaded images with ``model`` (eval mode; plain or from ``optimize``).

    Args:
        model: a classifier; an ``optimize`` result must be safe to call from ``concurrency`` threads at once.
        transform: PIL image to input tensor (default: the model's eval transform from its ``pretrained_cfg``).
        labels: class names by index (default: the model's, as ``timm-sknet predict`` prints them).
        topk: classes per answer.
        concurrency: model calls at once (worker threads); the rest wait without holding a thread.
        max_upload_bytes: the largest upload.
        max_pixels: the most pixels an image may have.
        decode_size: (width, height) a JPEG upload is decoded to at least, at the smallest DCT scale that covers it
            (:func:`timm_sknet.data.images.decode_size` of the transform's data config); default: that of the
            model's own eval transform where ``transform`` is not given, else None: decoded in full.
    """
    import anyio
    from fastapi import FastAPI, HTTPException, Request

    if concurrency < 1:
        raise ValueError(f'concurrency must be >= 1, got {concurrency}')
    transform, labels, decode_size = _default_preprocessing(model, transform, labels, decode_size)
    limiter = anyio.CapacityLimiter(concurrency)
    app = FastAPI(title='timm-sknet classifier', description=__doc__.split('\n\n')[1])

    def classify(data: bytes) -> List[Dict[str, Any]]:
        image = read_image(data, max_pixels, decode_size)
        return top_k(model, transform(image)[None], labels, topk)[0]

    @app.post('/predict')
    async def predict(request: Request) -> Dict[str, List[Dict[str, Any]]]:
        """Top classes of the image sent as the multipart field ``file`` or as the raw body."""
        data = await _read_upload(request, max_upload_bytes)
        if not data:
            raise HTTPException(400, f'empty upload: send the image as the request body or as the multipart field '
                                     f'{FIELD!r}')
        try:
            return {'predictions': await anyio.to_thread.run_sync(classify, data, limiter=limiter)}
        except ImageError as e:  # not an image, truncated, or over max_pixels
            raise HTTPException(422, str(e)) from None

    @app.get('/health')
    def health() -> Dict[str, Any]:
        """Up, and what runs the model."""
        return dict(status='ok', runs_as=getattr(model, 'description', f'PyTorch {type(model).__name__}'),
                    concurrency=concurrency, classes=len(labels))

    return app
