"""torch.hub entrypoints: ``torch.hub.load('<owner>/timm-sknet', 'sknet50', pretrained=True)``.

One entrypoint per SKNet model registered in timm by ``timm_sknet``; each calls
``timm.create_model(name, pretrained=pretrained, **kwargs)``, so every timm argument works (``num_classes``,
``in_chans``, ``features_only``, ``out_indices``, ``drop_path_rate``, ``pretrained_cfg_overlay``,
``cache_dir``, ...). Pretrained weights come from the Hugging Face Hub as sha256-verified safetensors.
Everything that is not an entrypoint is underscore-named, so ``torch.hub.list`` shows only models.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import timm as _timm  # noqa: E402

import timm_sknet as _timm_sknet  # noqa: E402,F401  (registers the models)


def _registered() -> list:
    """Models whose timm entrypoint lives in this package (so ``skresnet*`` of timm itself are not listed)."""
    return [n for n in _timm.list_models() if _timm.models.model_entrypoint(n).__module__.startswith('timm_sknet')]


def _make_entrypoint(name: str):
    def entrypoint(pretrained: bool = False, **kwargs):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)

    tags = [t.split('.', 1)[1] for t in _timm.list_pretrained(name) if '.' in t]
    weights = [t for t in tags if _timm.models.get_pretrained_cfg(f'{name}.{t}').has_weights]
    summary = (_timm.models.model_entrypoint(name).__doc__ or name).strip()
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f'{summary}\n\n'
        f'Pretrained weights: {", ".join(f"{name}.{t}" for t in weights) or "none exist"}.\n\n'
        f'Args:\n'
        f'    pretrained: load the default pretrained weights (sha256-verified safetensors from the Hub).\n'
        f'    **kwargs: passed to timm.create_model({name!r}, ...), e.g. num_classes=10, in_chans=1,\n'
        f'        features_only=True, pretrained_cfg_overlay=dict(file="weights.safetensors").\n')
    return entrypoint


for _name in _registered():
    globals()[_name] = _make_entrypoint(_name)
del _name
