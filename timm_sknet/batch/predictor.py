"""Bulk inference: images through a DataLoader and the model, one bad image never ending the run.

:class:`BatchPredictor` is the per-batch step, shared by ``timm-sknet predict`` and by Ray Data's
``map_batches`` (one predictor, so one optimized model, per actor; see docs/bulk-inference.md). Images are
decoded where it is cheap to parallelise (DataLoader workers, or the Ray actor); the model runs once per batch
in the process that built it. A file that cannot be read becomes a failure record (its path and the reason),
kept apart from the good images by :func:`collate`.
"""
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import timm
from timm.data import create_transform, resolve_data_config

from ..data.images import load_image
from ..data.labels import class_names, wordnet_ids
from ..inference import optimize

__all__ = ['Batch', 'BatchPredictor', 'ImageFiles', 'collate', 'decode', 'image_batches']

# ---------------------------------------------------------------------------------------------------------
# decoding, in DataLoader workers or Ray actors
# ---------------------------------------------------------------------------------------------------------

def decode(path: Union[str, Path], transform: Callable) -> Tuple[Optional[torch.Tensor], str]:
    """``(transform(image), '')``, or ``(None, reason)`` for a file that cannot be read: the run goes on."""
    try:
        return transform(load_image(path)), ''
    except Exception as e:  # noqa: BLE001  (any failure of one file is that file's, recorded with its reason)
        reason = ' '.join(str(e).split()) or type(e).__name__
        return None, reason if str(path) in reason else f'{path}: {reason}'


class ImageFiles(Dataset):
    """``(index, image or None, reason)`` per path: a dataset whose items never raise for a bad file."""

    def __init__(self, paths: Sequence[Union[str, Path]], transform: Callable):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[int, Optional[torch.Tensor], str]:
        return (index, *decode(self.paths[index], self.transform))


class Batch(NamedTuple):
    """The good images of a batch (``indices`` into the path list, stacked ``images`` or None if none) and the
    ``failures`` as ``(index, reason)``."""
    indices: List[int]
    images: Optional[torch.Tensor]
    failures: List[Tuple[int, str]]


def collate(samples: Sequence[Tuple[int, Optional[torch.Tensor], str]]) -> Batch:
    """:class:`ImageFiles` items to a :class:`Batch`, good and bad kept apart."""
    good = [(i, x) for i, x, _ in samples if x is not None]
    return Batch([i for i, _ in good], torch.stack([x for _, x in good]) if good else None,
                 [(i, reason) for i, x, reason in samples if x is None])


def image_batches(paths: Sequence[Union[str, Path]], transform: Callable, batch_size: int,
                  workers: int) -> Iterator[Batch]:
    """:class:`Batch` es of ``paths`` in order, decoded by ``workers`` DataLoader processes (0: this one)."""
    workers = min(workers, -(-len(paths) // batch_size))  # no idle workers for a few files
    loader = DataLoader(ImageFiles(paths, transform), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate, shuffle=False)
    return iter(loader)


# ---------------------------------------------------------------------------------------------------------
# the per-batch step
# ---------------------------------------------------------------------------------------------------------

class _WithPreLogits(nn.Module):
    """Logits and pre_logits (the pooled features before the classifier) of one forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = model  # a timm classifier: forward_features, forward_head, get_classifier

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        pre_logits = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return [self.model.get_classifier()(pre_logits), pre_logits]


class BatchPredictor:
    """Top-k classes (and optionally pre_logits embeddings) of batches of images, one optimized model.

    ``timm-sknet predict`` calls :meth:`predict` on batches its DataLoader decoded; Ray Data calls the predictor
    itself (:meth:`__call__`) on batches of paths, building one per actor::

        ds.map_batches(BatchPredictor, fn_constructor_kwargs=dict(model='sknet50', pretrained=True),
                       batch_size=64, compute=ray.data.ActorPoolStrategy(size=4))

    Args:
        model: a registered model name (``timm.create_model``), or a built classifier.
        pretrained: with a name, load its pretrained weights.
        backend: as :func:`timm_sknet.inference.optimize` ('auto', 'eager', 'inductor', 'onnxruntime', 'openvino').
        precision: as ``optimize`` ('fp32', 'bf16', 'int8').
        calibration: int8 only, as ``optimize``.
        img_size: input size (default: the model's pretrained_cfg); preprocessing is timm's eval transform.
        topk: classes per image (at most the number of classes).
        embeddings: also return pre_logits (``forward_head(pre_logits=True)``), from the same forward pass.

    Raises:
        ValueError: the model has no classifier head.
        BackendUnavailable, OptimizationError: from ``optimize``.
    """

    def __init__(self, model: Union[str, nn.Module] = 'sknet50', *, pretrained: bool = False, backend: str = 'auto',
                 precision: str = 'fp32', img_size: Optional[int] = None, topk: int = 5, embeddings: bool = False,
                 calibration: Optional[Sequence[torch.Tensor]] = None):
        if isinstance(model, str):
            model = timm.create_model(model, pretrained=pretrained)
        model = model.eval()
        if not getattr(model, 'num_classes', 0):
            raise ValueError(f'{type(model).__name__} has no classifier head (num_classes=0): nothing to predict')
        self.data_config = resolve_data_config({'img_size': img_size} if img_size else {}, model=model)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.labels = class_names(model)
        wordnet: Optional[List[str]] = wordnet_ids(model)
        self.wordnet: List[Optional[str]] = list(wordnet) if wordnet else [None] * len(self.labels)
        self.topk = min(topk, len(self.labels))
        width = getattr(model, 'head_hidden_size', None) or getattr(model, 'num_features')
        self.embedding_size = int(width) if embeddings else 0
        self.model = optimize(_WithPreLogits(model) if embeddings else model, backend, precision,
                              input_size=self.data_config['input_size'], calibration=calibration)
        self.columns = ['path', *(f'{what}_{rank}' for rank in range(1, self.topk + 1)
                                  for what in ('label', 'index', 'probability'))]

    def predict(self, paths: Sequence[Union[str, Path]],
                images: torch.Tensor) -> Tuple[List[Dict[str, Any]], Optional[np.ndarray]]:
        """One row per image (:attr:`columns`: path, then label, index and probability of each of the top k)
        and, with ``embeddings``, their pre_logits as a float32 array of the same row order."""
        out = self.model(images)
        logits, pre_logits = out if self.embedding_size else (out, None)
        top = logits.float().softmax(dim=-1).topk(self.topk, dim=-1)
        rows = []
        for path, values, indices in zip(paths, top.values.tolist(), top.indices.tolist()):
            row: Dict[str, Any] = {'path': str(path)}
            for rank, (p, c) in enumerate(zip(values, indices), 1):
                row.update({f'label_{rank}': self.labels[c], f'index_{rank}': c, f'probability_{rank}': p})
            rows.append(row)
        embeddings = pre_logits.float().cpu().numpy() if pre_logits is not None else None
        return rows, embeddings

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Ray Data's ``map_batches`` step: a ``path`` column in; out, one row per path in the same order, the
        :attr:`columns`, ``error`` ('' or why the file could not be read: then labels are '', indices -1 and
        probabilities NaN) and, with ``embeddings``, ``embedding`` (NaN for a failed file)."""
        paths = [str(p) for p in batch['path']]
        decoded = [decode(p, self.transform) for p in paths]
        blank = {c: '' if c.startswith('label') else -1 if c.startswith('index') else float('nan')
                 for c in self.columns}
        rows = [dict(blank, path=p, error=reason) for p, (_, reason) in zip(paths, decoded)]
        good = [i for i, (x, _) in enumerate(decoded) if x is not None]
        embeddings = np.full((len(paths), self.embedding_size), np.nan, dtype=np.float32)
        if good:
            images = torch.stack([x for x, _ in decoded if x is not None])
            predicted, pre_logits = self.predict([paths[i] for i in good], images)
            for i, row in zip(good, predicted):
                rows[i] = dict(row, error='')
            if pre_logits is not None:
                embeddings[good] = pre_logits
        columns = {c: np.array([row[c] for row in rows]) for c in (*self.columns, 'error')}
        if self.embedding_size:
            columns['embedding'] = embeddings
        return columns
