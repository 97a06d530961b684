"""timm's feature extractors, completed where ``set_grad_checkpointing`` would not work.

``timm.create_model(name, features_only=True, feature_cls=...)`` wraps the model in one of timm's
extractors. The list and dict extractors checkpoint stage by stage. The others need help:

* ``'hook'`` by default wraps the whole model as one module, which its checkpointing always skips (it never
  checkpoints the first module), so ``set_grad_checkpointing()`` silently saved nothing. Built over the
  model's top-level modules instead (timm's ``no_rewrite=False``), it checkpoints stages like 'list'.
* ``'getter'`` wraps the whole model and calls its ``forward_intermediates``, which checkpoints block by
  block once the model's flag is set; timm's class has no ``set_grad_checkpointing``:
  :class:`SKFeatureGetterNet` forwards the call.
* ``'fx'`` runs a traced graph, which has no stage modules left to checkpoint:
  :class:`SKFeatureGraphNet` refuses clearly and names the extractors that can.

``_create_sknet`` applies :func:`feature_kwargs`; everything else is timm's.
"""
from typing import Any, Dict, Type, Union

from torch import nn

from timm.models import FeatureGraphNet
from timm.models._features import FeatureGetterNet  # not re-exported by timm.models (1.0.31)

__all__ = ['SKFeatureGetterNet', 'SKFeatureGraphNet', 'feature_kwargs', 'resolve_feature_cls']


class SKFeatureGetterNet(FeatureGetterNet):
    """``feature_cls='getter'``: timm's ``FeatureGetterNet`` with grad checkpointing passed to the model."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        getattr(self.model, 'set_grad_checkpointing')(enable)


class SKFeatureGraphNet(FeatureGraphNet):
    """``feature_cls='fx'``: timm's ``FeatureGraphNet``; refuses grad checkpointing rather than ignoring it."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError(
                "feature_cls='fx' runs a traced graph, which cannot be gradient-checkpointed. Create the "
                "backbone with feature_cls='list' (the default), 'dict', 'hook' or 'getter' to use "
                "set_grad_checkpointing().")


_REPLACEMENTS = {'getter': SKFeatureGetterNet, 'fx': SKFeatureGraphNet}


def resolve_feature_cls(feature_cls: Union[str, Type[nn.Module]]) -> Union[str, Type[nn.Module]]:
    """The extractor to build for a ``feature_cls`` argument: ours for 'getter' and 'fx', else unchanged."""
    if isinstance(feature_cls, str):
        return _REPLACEMENTS.get(feature_cls.lower(), feature_cls)
    return feature_cls


def feature_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``create_model`` kwargs with features_only settings under which grad checkpointing works.

    ``feature_cls`` may come as a kwarg or inside ``feature_cfg`` (timm accepts both); either is resolved.
    """
    if not kwargs.get('features_only'):
        return kwargs
    kwargs = dict(kwargs)
    # 'hook' over the top-level modules rather than one opaque body; a user's feature_cfg still wins
    feature_cfg = {'no_rewrite': False, **(kwargs.get('feature_cfg') or {})}
    for holder in (kwargs, feature_cfg):
        if 'feature_cls' in holder:
            holder['feature_cls'] = resolve_feature_cls(holder['feature_cls'])
    kwargs['feature_cfg'] = feature_cfg
    return kwargs
