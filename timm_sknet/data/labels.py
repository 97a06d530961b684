"""A classifier's outputs as people read them: class names, and the top-k classes with their probabilities."""
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

__all__ = ['class_names', 'class_wnids', 'top_k']


def class_names(model: nn.Module) -> List[str]:
    """Readable class names: ImageNet's for a 1000-class head, the cfg's ``label_names``, else indices."""
    num_classes = int(getattr(model, 'num_classes', 0) or 0)
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    if num_classes == 1000:
        from timm.data import ImageNetInfo
        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(num_classes)]
    labels = cfg.get('label_names')
    if labels and len(labels) == num_classes:
        return [str(x) for x in labels]
    return [f'class {i}' for i in range(num_classes)]


def class_wnids(model: nn.Module) -> List[str]:
    """The WordNet id of each class (``n01440764``, ...) of a head timm maps to an ImageNet subset by its size
    (``timm.data.infer_imagenet_subset``: 1000 classes, 21k, 12k, ...); ``''`` for every class of any other head."""
    from timm.data import ImageNetInfo, infer_imagenet_subset
    num_classes = int(getattr(model, 'num_classes', 0) or 0)
    subset = infer_imagenet_subset(model)
    if subset is None:
        return [''] * num_classes
    info = ImageNetInfo(subset)
    return [info.index_to_label_name(i) for i in range(num_classes)]


def top_k(model: nn.Module, x: torch.Tensor, labels: Sequence[str], k: int = 5) -> List[List[Dict[str, Any]]]:
    """Per image of the batch ``x``: the ``k`` most probable classes as ``{label, index, probability}``."""
    with torch.inference_mode():
        probs = model(x).float().softmax(dim=-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [[dict(label=labels[i], index=i, probability=p) for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]
