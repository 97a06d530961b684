"""The service's answers as pydantic models: FastAPI checks every response against them and documents them in the
OpenAPI schema (``/openapi.json``, ``/docs``)."""
from typing import List, Optional

from pydantic import BaseModel, Field

__all__ = ['Embedding', 'Health', 'Prediction', 'Predictions', 'Problem', 'Readiness']


class Prediction(BaseModel):
    index: int = Field(description="the model's output index")
    wordnet_id: Optional[str] = Field(description="the class's WordNet id ('n01440764') for an ImageNet model, "
                                                  'else null')
    label: str = Field(description='the class name')
    probability: float = Field(ge=0, le=1, description='softmax probability')


class Predictions(BaseModel):
    predictions: List[Prediction] = Field(description='the top-k classes, most probable first')


class Embedding(BaseModel):
    embedding: List[float] = Field(description="the pooled features before the classifier (timm's "
                                               'forward_head(forward_features(x), pre_logits=True))')
    dim: int = Field(description='the length of embedding')


class Health(BaseModel):
    status: str = Field(description="'ok' while the process runs")
    runs_as: str = Field(description='what runs the model')
    concurrency: int = Field(description='model calls at once')
    max_queue: int = Field(description='requests that may wait for a model call before 503')
    classes: int = Field(description='the number of classes')


class Readiness(BaseModel):
    ready: bool = Field(description='the model is built and warmed, and the server is not draining')
    status: str = Field(description="'ready', 'starting' or 'draining'")


class Problem(BaseModel):
    detail: str = Field(description='what was wrong and what to do')
