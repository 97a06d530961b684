"""Write a model (or a timm checkpoint) as a Hugging Face Hub folder that timm loads back.

The folder holds what timm's ``hf-hub:`` and ``local-dir:`` loaders read (``config.json`` and
``model.safetensors``, written by :func:`timm.models.save_for_hf`) plus a ``README.md`` model card whose YAML
front matter the Hub indexes (``library_name: timm``, license, datasets, tags) and which records the sha256 of
the weights file. It is written to a temporary folder next to the target and renamed into place, so a failed
export never leaves a folder that looks complete.

Load it back (``import timm_sknet`` first, to register the architecture)::

    timm.create_model('local-dir:/path/to/folder', pretrained=True)
    timm.create_model('hf-hub:<user>/<repo>', pretrained=True)      # once pushed

Push it with ``huggingface_hub.upload_folder(repo_id='<user>/<repo>', folder_path='/path/to/folder')``
(after ``hf auth login``), or push a model directly with ``timm.models.push_to_hf_hub``.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

import timm
from timm.models import load_state_dict, save_for_hf

from .hub_weights import WEIGHTS_FILENAME, sha256_file

__all__ = ['export_hub_folder', 'model_card']


def _from_checkpoint(path: Path, model_name: str, model_kwargs: Dict[str, Any]) -> nn.Module:
    """Build ``model_name`` sized like the checkpoint (classes, input channels) and load it, strictly."""
    state_dict = load_state_dict(str(path), weights_only=True)  # handles state_dict / state_dict_ema / module.
    kwargs = dict(model_kwargs)
    if 'fc.weight' in state_dict:
        kwargs.setdefault('num_classes', state_dict['fc.weight'].shape[0])
    elif not any(k.startswith('fc.') for k in state_dict):
        kwargs.setdefault('num_classes', 0)
    if 'conv1.weight' in state_dict:
        kwargs.setdefault('in_chans', state_dict['conv1.weight'].shape[1])
    model = timm.create_model(model_name, **kwargs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f'The checkpoint {path} does not match {model_name} built with {kwargs}: {str(e).splitlines()[0]}. '
            f'Pass the model_name (and model_kwargs, e.g. layers=...) it was trained with.') from e
    return model


def model_card(
        model: nn.Module,
        weights_sha256: str,
        repo_id: Optional[str] = None,
        license: str = 'apache-2.0',
        datasets: Sequence[str] = ('imagenet-1k',),
        tags: Sequence[str] = (),
        description: Optional[str] = None,
) -> str:
    """README.md text: YAML front matter the Hub indexes, then what the weights are and how to load them."""
    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    arch = cfg.get('architecture') or type(model).__name__
    all_tags = list(dict.fromkeys(['image-classification', 'timm', 'timm-sknet', 'selective-kernel', *tags]))
    front = ['---', 'library_name: timm', f'license: {license}', 'pipeline_tag: image-classification']
    if datasets:
        front += ['datasets:', *(f'- {d}' for d in datasets)]
    front += ['tags:', *(f'- {t}' for t in all_tags)]
    front += ['weights_sha256:', f'  {WEIGHTS_FILENAME}: {weights_sha256}', '---']
    name = repo_id or '<user>/<repo>'
    params = sum(p.numel() for p in model.parameters())
    body = [
        f'# {name.split("/")[-1]}',
        '',
        description or f'{arch} (Selective Kernel Network, Li et al., CVPR 2019) for timm, exported by timm-sknet.',
        '',
        '## Details',
        f'- **Architecture:** `{arch}` (registered by `pip install timm-sknet`; `import timm_sknet` before loading)',
        f'- **Parameters:** {params / 1e6:.2f} M',
        f'- **Classes:** {getattr(model, "num_classes", "?")}',
        f'- **Input:** {tuple(cfg.get("input_size", ()))}, crop_pct {cfg.get("crop_pct")}, '
        f'{cfg.get("interpolation")} interpolation, mean {tuple(cfg.get("mean", ()))}, std {tuple(cfg.get("std", ()))}',
        f'- **Weights:** `{WEIGHTS_FILENAME}`, sha256 `{weights_sha256}`',
        f'- **License:** {license}',
        '',
        '## Usage',
        '```python',
        'import timm',
        'import timm_sknet  # registers the SKNet architectures',
        f"model = timm.create_model('hf-hub:{name}', pretrained=True).eval()",
        'config = timm.data.resolve_data_config({}, model=model)',
        'transform = timm.data.create_transform(**config)',
        '```',
        '',
        '## Citation',
        '```bibtex',
        '@inproceedings{li2019selective,',
        '  title={Selective Kernel Networks},',
        '  author={Li, Xiang and Wang, Wenhai and Hu, Xiaolin and Yang, Jian},',
        '  booktitle={CVPR},',
        '  year={2019}',
        '}',
        '```',
    ]
    return '\n'.join(front + body) + '\n'


def export_hub_folder(
        source: Union[nn.Module, str, Path],
        out_dir: Union[str, Path],
        *,
        model_name: Optional[str] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        repo_id: Optional[str] = None,
        license: str = 'apache-2.0',
        datasets: Sequence[str] = ('imagenet-1k',),
        tags: Sequence[str] = (),
        description: Optional[str] = None,
        data_config: Optional[Dict[str, Any]] = None,
        overwrite: bool = False,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` for the Hub / ``local-dir:`` into ``out_dir``.

    Args:
        source: a timm model (made with ``timm.create_model``, so its config can be recorded), or the path of
            a timm checkpoint (``.safetensors``, or ``.pth`` / ``.pth.tar`` / ``.bin`` read with
            ``weights_only=True``; ``state_dict`` / ``state_dict_ema`` wrappers are unwrapped).
        out_dir: the folder to create.
        model_name: registered architecture of a checkpoint, e.g. ``'sknet50'`` (required for a checkpoint).
        model_kwargs: extra ``create_model`` arguments a checkpoint needs (classes and input channels are
            read from the checkpoint).
        repo_id: the Hub repo the folder is meant for; only used in the model card's usage example.
        license, datasets, tags, description: model card metadata.
        data_config: preprocessing to record, if it differs from the model's pretrained cfg.
        overwrite: replace an existing non-empty ``out_dir`` (atomically: the old one stays until the new one
            is complete).

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f'{out_dir} exists and is not a folder; choose another out_dir.')
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f'{out_dir} exists and is not empty; pass overwrite=True to replace it.')
    if isinstance(source, nn.Module):
        model = source
    else:
        if not model_name:
            raise ValueError('Exporting a checkpoint needs model_name, e.g. model_name="sknet50".')
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f'Checkpoint {path} does not exist.')
        model = _from_checkpoint(path, model_name, model_kwargs or {})
    if not getattr(model, 'pretrained_cfg', None):
        raise ValueError('The model has no pretrained_cfg: create it with timm.create_model(...) to export it.')

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', suffix='.partial', dir=out_dir.parent))
    try:
        with torch.no_grad():
            save_for_hf(model, str(tmp), safe_serialization=True, data_config=data_config)
        digest = sha256_file(tmp / WEIGHTS_FILENAME)
        (tmp / 'README.md').write_text(
            model_card(model, digest, repo_id=repo_id, license=license, datasets=datasets, tags=tags,
                       description=description),
            encoding='utf-8')
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and removed only afterwards."""
    if target.is_dir() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', suffix='.old', dir=target.parent))
        os.replace(target, old)  # replaces the empty placeholder folder
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)  # a missing or empty target
