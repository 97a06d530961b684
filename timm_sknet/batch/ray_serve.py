"""The HTTP service on Ray Serve: the Ray Data route's :class:`~timm_sknet.batch.predictor.BatchPredictor`, one per
replica, behind ``POST /`` (``pip install "timm-sknet[ray]"``; docs/serving.md).

The body is one image (raw bytes, as ``curl --data-binary @cat.jpg``); the answer is ``timm-sknet serve``'s
``/predict`` answer for it: ``{"predictions": [{"index", "wordnet_id", "label", "probability"}, ...]}``, most
probable first. Requests that wait for a replica's model together go through it as one batch
(``ray.serve.batch``, at most ``max_batch`` images, waiting at most ``max_wait_ms`` for them). Replicas and
autoscaling are Ray Serve's own deployment options::

    from ray import serve
    from timm_sknet.batch.ray_serve import Classifier
    app = Classifier.options(num_replicas=2, ray_actor_options={'num_cpus': 1}).bind('sknet50', pretrained=True)
    serve.run(app)
"""
from typing import Any, Dict, List, Optional

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..data.images import ImageError, read_image
from .predictor import BatchPredictor

__all__ = ['Classifier']


@serve.deployment
class Classifier:
    """A replica: one :class:`BatchPredictor` (so one optimized model); the arguments are its own, as for Ray Data,
    and ``max_batch``, ``max_wait_ms`` and ``max_pixels`` as for ``timm-sknet serve``."""

    def __init__(self, model: str = 'sknet50', *, pretrained: bool = False, backend: str = 'auto',
                 precision: str = 'fp32', img_size: Optional[int] = None, topk: int = 5, max_batch: int = 8,
                 max_wait_ms: float = 5, max_pixels: int = 50_000_000):
        self.predictor = BatchPredictor(model, pretrained=pretrained, backend=backend, precision=precision,
                                        img_size=img_size, topk=topk)
        self.max_pixels = max_pixels
        # serve.batch's setters, which mypy cannot see on the decorated method
        self.batched.set_max_batch_size(max_batch)  # type: ignore[attr-defined]
        self.batched.set_batch_wait_timeout_s(max_wait_ms / 1000)  # type: ignore[attr-defined]

    async def __call__(self, request: Request) -> Any:
        data = await request.body()
        if not data:
            return JSONResponse({'detail': 'empty request: send the image as the body (curl --data-binary '
                                           '@image.jpg)'}, status_code=400)
        try:
            x = self.predictor.transform(read_image(data, self.max_pixels))
        except ImageError as e:  # not an image, truncated, or over max_pixels
            return JSONResponse({'detail': str(e)}, status_code=422)
        return await self.batched(x)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def batched(self, images: List[torch.Tensor]) -> List[Dict[str, Any]]:
        with torch.inference_mode():
            rows, _ = self.predictor.predict([''] * len(images), torch.stack(images))
        top = range(1, self.predictor.topk + 1)
        return [{'predictions': [dict(index=row[f'index_{k}'], wordnet_id=self.predictor.wnids[row[f'index_{k}']] or None,
                                      label=row[f'label_{k}'], probability=row[f'probability_{k}']) for k in top]}
                for row in rows]
