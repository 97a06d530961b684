"""Write a model (or a timm checkpoint) as a Hugging Face Hub folder that timm loads back.

The folder holds what timm's ``hf-hub:`` and ``local-dir:`` loaders read (``config.json`` and
``model.safetensors``, written by :func:`timm.models.save_for_hf`) plus a ``README.md`` model card whose YAML
front matter the Hub indexes (``library_name: timm``, license, datasets, tags) and which records the sha256 of
the weights file. It is written to a temporary folder next to the target and renamed into place, so a failed
export never leaves a folder that looks complete.

:func:`write_model_files` is the package's one writer of that layout: the exporter here and the training
checkpoints (``timm_sknet.tools.train_checkpoint``) both use it.

Load it back (``import timm_sknet`` first, to register the architecture)::

    timm.create_model('local-dir:/path/to/folder', pretrained=True)
    timm.create_model('hf-hub:<user>/<repo>', pretrained=True)      # once pushed

Push it with ``huggingface_hub.upload_folder(repo_id='<user>/<repo>', folder_path='/path/to/folder')``
(after ``hf auth login``), or push a model directly with ``timm.models.push_to_hf_hub``.
"""
import copy
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from timm.models import save_for_hf

from ..file_io import atomic_folder, sha256_file
from .checkpoint import model_from_checkpoint
from .download import WEIGHTS_FILENAME

__all__ = ['export_hub_folder', 'model_card', 'write_model_files']


def _contiguous(model: nn.Module) -> nn.Module:
    """``model``, or a contiguous copy of it: safetensors refuses non-contiguous (channels_last) tensors."""
    if all(t.is_contiguous() for t in model.state_dict().values()):
        return model
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


def write_model_files(
        model: nn.Module,
        folder: Union[str, Path],
        *,
        label_names: Optional[Sequence[str]] = None,
        data_config: Optional[Dict[str, Any]] = None,
) -> str:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``folder``; return the weights' sha256.

    ``folder`` is filled as it is: callers write into a temporary folder (``file_io.atomic_folder``) that is
    renamed into place once complete. ``model.pretrained_cfg`` supplies the preprocessing recorded in
    config.json; ``data_config`` overrides it; ``label_names`` name the classifier's outputs.
    """
    folder = Path(folder)
    model_config = {'label_names': list(label_names)} if label_names else None
    extra = {'data_config': data_config} if data_config is not None else {}
    with torch.no_grad():
        save_for_hf(_contiguous(model), str(folder), model_config=model_config, safe_serialization=True, **extra)
    return sha256_file(folder / WEIGHTS_FILENAME)


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
        model = model_from_checkpoint(source, model_name, **(model_kwargs or {}))
    if not getattr(model, 'pretrained_cfg', None):
        raise ValueError('The model has no pretrained_cfg: create it with timm.create_model(...) to export it.')
    with atomic_folder(out_dir) as tmp:
        digest = write_model_files(model, tmp, data_config=data_config)
        card = model_card(model, digest, repo_id=repo_id, license=license, datasets=datasets, tags=tags,
                          description=description)
        (tmp / 'README.md').write_text(card, encoding='utf-8')
    return out_dir
