"""Write a model as a Hugging Face Hub folder that timm and transformers load back.

The folder holds what timm's ``hf-hub:`` and ``local-dir:`` loaders read (``config.json`` and
``model.safetensors``, written by :func:`timm.models.save_for_hf`) plus a ``README.md`` model card whose YAML
front matter the Hub indexes (``library_name: timm``, license, datasets, tags) and which records the sha256 of
the weights file. It is written to a temporary folder next to the target and renamed into place, so a failed
export never leaves a folder that looks complete.

Two things of timm's ``config.json`` are adjusted so that transformers' ``TimmWrapper`` (``AutoModel*``,
``pipeline``) loads the same folder: ``num_classes`` is left out of ``model_args`` (transformers passes the
class count itself, and a second one is a ``TypeError``; timm reads it from the root and ``pretrained_cfg``),
and the class names are written at the root as ``label_names`` (transformers' ``id2label``), taken from the
model's ``pretrained_cfg`` when the caller gives none.

The card and ``config.json`` say what the weights are only where that is known: when the model holds a pretrained
tag's weights exactly as ``timm.create_model(..., pretrained=True)`` loaded them (``in1k`` -> ImageNet-1k,
``synthetic`` -> the package's synthetic shapes; see :mod:`timm_sknet.hub.provenance`), else as the exporter
states them (``datasets=``, ``license=``, ``description=``), else "unknown". A model merely created with a tag's
cfg, re-headed, or trained since says so. huggingface_hub's ``ModelCard`` writes the card.

:func:`write_model_files` is the package's one writer of that layout: the exporter here and the training
checkpoints (``timm_sknet.training.checkpoint``) both use it.

Load it back (installed with pip, the models are registered when timm is imported)::

    timm.create_model('local-dir:/path/to/folder', pretrained=True)
    timm.create_model('hf-hub:<user>/<repo>', pretrained=True)      # once pushed
    transformers.AutoModelForImageClassification.from_pretrained('/path/to/folder')

Push it with ``huggingface_hub.upload_folder(repo_id='<user>/<repo>', folder_path='/path/to/folder')``
(after ``hf auth login``), or push a model directly with ``timm.models.push_to_hf_hub``.
"""
import copy
import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import torch
from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from timm.models import save_for_hf

from ..file_io import atomic_folder, sha256_file, write_text_atomic
from .download import WEIGHTS_FILENAME
from .provenance import weights_provenance

__all__ = ['CardFacts', 'TrainingData', 'card_facts', 'export_hub_folder', 'model_card', 'training_data',
           'write_model_files']


class TrainingData(NamedTuple):
    """What a set of weights was trained on: Hub dataset ids for the card's front matter, and words for people."""
    hub_ids: List[str]
    description: str


#: the dataset part of a timm pretrained tag (``ra_in1k`` -> ``in1k``) and of this package's own tags
_TAG_DATASETS = {
    'in1k': TrainingData(['imagenet-1k'], 'ImageNet-1k'),
    'in12k': TrainingData(['imagenet-12k'], 'ImageNet-12k'),
    'in22k': TrainingData(['imagenet-22k'], 'ImageNet-22k'),
    'synthetic': TrainingData([], "timm-sknet's synthetic multi-scale shapes (timm_sknet.data.synthetic), "
                                  'not a public data set'),
}
_UNKNOWN = TrainingData([], 'unknown')


class CardFacts(NamedTuple):
    """What a model card states about the weights; ``None`` / empty where it is not known."""
    license: Optional[str]
    datasets: List[str]
    trained_on: str
    origin: str
    base_model: Optional[str]  # the Hub repository the weights started from (the Hub's "fine-tuned from")
    notes: Sequence[str]


def _tag_data(tag: str) -> TrainingData:
    for part in reversed(tag.split('.', 1)[-1].split('_')):
        if part in _TAG_DATASETS:
            return _TAG_DATASETS[part]
    return _UNKNOWN


def training_data(model: nn.Module) -> TrainingData:
    """What ``model``'s weights were trained on: known only while it holds a pretrained tag's weights unchanged
    (:func:`timm_sknet.hub.provenance.weights_provenance`), not from the tag it was merely created with."""
    tag = weights_provenance(model).tag
    return _tag_data(tag) if tag else _UNKNOWN


def card_facts(model: nn.Module, license: Optional[str] = None, datasets: Optional[Sequence[str]] = None) -> CardFacts:
    """What the card may say: from the tag whose weights the model holds, else what the caller states, else
    "unknown". The caller's ``license`` / ``datasets`` always win."""
    import timm

    tag, started_from = weights_provenance(model)
    name = tag or started_from
    cfg = timm.models.get_pretrained_cfg(name) if name else None
    if tag and cfg is not None:
        known = _tag_data(tag)
        facts = CardFacts(cfg.license, known.hub_ids, known.description,
                          f'the weights of the pretrained tag `{tag}`' + (f' (Hub repository `{cfg.hf_hub_id}`)'
                                                                         if cfg.hf_hub_id else '')
                          + ', unchanged', None, tuple(cfg.notes or ()))
    elif started_from and cfg is not None:
        facts = CardFacts(None, [], 'unknown', f'started from the weights of `{started_from}` '
                          f'({_tag_data(started_from).description}), then re-headed, adapted or trained',
                          cfg.hf_hub_id, ())
    else:
        facts = CardFacts(None, [], 'unknown', 'not loaded from a pretrained tag: randomly initialised, or '
                          'trained or loaded by the user', None, ())
    if datasets is not None:
        facts = facts._replace(datasets=list(datasets), trained_on=', '.join(datasets) or 'unknown')
    return facts._replace(license=license or facts.license)


def _contiguous(model: nn.Module) -> nn.Module:
    """``model``, or a contiguous copy of it: safetensors refuses non-contiguous (channels_last) tensors."""
    if all(t.is_contiguous() for t in model.state_dict().values()):
        return model
    return copy.deepcopy(model).to(memory_format=torch.contiguous_format)


def _label_names(model: nn.Module, label_names: Optional[Sequence[str]]) -> Optional[List[str]]:
    """The given names, else the ``pretrained_cfg``'s when they still fit the classifier."""
    if label_names:
        return [str(x) for x in label_names]
    cfg_names = (getattr(model, 'pretrained_cfg', None) or {}).get('label_names')
    if cfg_names and len(cfg_names) == getattr(model, 'num_classes', None):
        return [str(x) for x in cfg_names]
    return None


#: pretrained_cfg entries that describe where weights came from: true of a tag's own weights only
_PROVENANCE_KEYS = ('tag', 'license', 'notes', 'origin_url', 'description')


def _finish_config(config_path: Path, model: nn.Module, license: Optional[str]) -> None:
    """Adjust timm's ``config.json``: loadable by transformers, and naming where the weights came from only where
    that is known.

    ``num_classes`` leaves ``model_args``: transformers' TimmWrapper passes it itself (a second one is a
    TypeError); timm reads the class count from the root and from ``pretrained_cfg``. The ``pretrained_cfg``'s
    tag, license and notes stay only while the model holds that tag's weights unchanged.
    """
    config = json.loads(config_path.read_text(encoding='utf-8'))
    model_args = config.get('model_args') or {}
    model_args.pop('num_classes', None)
    if model_args:
        config['model_args'] = model_args
    else:
        config.pop('model_args', None)
    pretrained_cfg = config.get('pretrained_cfg') or {}
    if weights_provenance(model).tag is None:
        for key in _PROVENANCE_KEYS:
            pretrained_cfg.pop(key, None)
    if license:
        pretrained_cfg['license'] = license
    write_text_atomic(config_path, json.dumps(config, indent=2) + '\n')


def write_model_files(
        model: nn.Module,
        folder: Union[str, Path],
        *,
        label_names: Optional[Sequence[str]] = None,
        data_config: Optional[Dict[str, Any]] = None,
        license: Optional[str] = None,
) -> str:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``folder``; return the weights' sha256.

    ``folder`` is filled as it is: callers write into a temporary folder (``file_io.atomic_folder``) that is
    renamed into place once complete. ``model.pretrained_cfg`` supplies the preprocessing recorded in
    config.json; ``data_config`` overrides it; ``label_names`` name the classifier's outputs (default: the
    ``pretrained_cfg``'s, if they fit); ``license`` is recorded in the config's ``pretrained_cfg``.
    """
    folder = Path(folder)
    names = _label_names(model, label_names)
    model_config = {'label_names': names} if names else None
    with torch.no_grad():
        save_for_hf(_contiguous(model), str(folder), model_config=model_config, safe_serialization=True,
                    data_config=data_config)
    _finish_config(folder / 'config.json', model, license)
    return sha256_file(folder / WEIGHTS_FILENAME)


def _details(model: nn.Module, cfg: Dict[str, Any], facts: CardFacts, weights_sha256: str) -> List[str]:
    arch = cfg.get('architecture') or type(model).__name__
    params = sum(p.numel() for p in model.parameters())
    lines = [
        '## Details',
        f'- **Architecture:** `{arch}` (registered in timm by `pip install timm-sknet`)',
        f'- **Parameters:** {params / 1e6:.2f} M',
        f'- **Classes:** {getattr(model, "num_classes", "?")}',
        f'- **Weights:** {facts.origin}',
        f'- **Trained on:** {facts.trained_on}',
        f'- **Input:** {tuple(cfg.get("input_size", ()))}, crop_pct {cfg.get("crop_pct")}, '
        f'{cfg.get("interpolation")} interpolation, mean {tuple(cfg.get("mean", ()))}, std {tuple(cfg.get("std", ()))}',
        f'- **File:** `{WEIGHTS_FILENAME}`, sha256 `{weights_sha256}`',
        f'- **License:** {facts.license or "not stated"}',
    ]
    return lines + [f'- **Note:** {note}' for note in facts.notes]


def _usage(repo: str) -> List[str]:
    return [
        '## Usage',
        '```python',
        'import timm  # with timm-sknet installed, the sknet architectures register themselves',
        f"model = timm.create_model('hf-hub:{repo}', pretrained=True).eval()",
        'config = timm.data.resolve_data_config({}, model=model)',
        'transform = timm.data.create_transform(**config)',
        '',
        'from transformers import pipeline  # or AutoModelForImageClassification.from_pretrained',
        f"classify = pipeline('image-classification', model='{repo}')",
        '```',
    ]


_CITATION = [
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


def model_card(
        model: nn.Module,
        weights_sha256: str,
        repo_id: Optional[str] = None,
        license: Optional[str] = None,
        datasets: Optional[Sequence[str]] = None,
        tags: Sequence[str] = (),
        description: Optional[str] = None,
) -> ModelCard:
    """The model card: YAML front matter the Hub indexes, then what the weights are and how to load them.

    What the weights are (license, datasets, "trained on") is stated only where it is known (:func:`card_facts`):
    from the pretrained tag whose weights the model holds unchanged, else from ``license`` / ``datasets`` /
    ``description``, else as "unknown". huggingface_hub's ``ModelCardData`` writes the front matter, so no
    string can change its structure.
    """
    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    facts = card_facts(model, license, datasets)
    data = ModelCardData(
        library_name='timm', license=facts.license, pipeline_tag='image-classification',
        datasets=facts.datasets or None, base_model=facts.base_model,
        tags=list(dict.fromkeys(['image-classification', 'timm', 'timm-sknet', 'selective-kernel', *tags])),
        weights_sha256={WEIGHTS_FILENAME: weights_sha256})
    name = repo_id or '<user>/<repo>'
    arch = cfg.get('architecture') or type(model).__name__
    intro = description or f'{arch} (Selective Kernel Network, Li et al., CVPR 2019) for timm, exported by timm-sknet.'
    body = [f'# {name.split("/")[-1]}', '', intro, '', *_details(model, cfg, facts, weights_sha256),
            '', *_usage(name), '', *_CITATION]
    return ModelCard(f'---\n{data.to_yaml()}\n---\n' + '\n'.join(body) + '\n')


def export_hub_folder(
        model: nn.Module,
        out_dir: Union[str, Path],
        *,
        repo_id: Optional[str] = None,
        license: Optional[str] = None,
        datasets: Optional[Sequence[str]] = None,
        tags: Sequence[str] = (),
        description: Optional[str] = None,
        data_config: Optional[Dict[str, Any]] = None,
        label_names: Optional[Sequence[str]] = None,
        overwrite: bool = False,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` for the Hub / ``local-dir:`` into ``out_dir``.

    Args:
        model: a timm model (made with ``timm.create_model``, so its config can be recorded); for a checkpoint
            file, build it with :func:`timm_sknet.models.model_from_checkpoint` first.
        out_dir: the folder to create.
        repo_id: the Hub repo the folder is meant for; only used in the model card's usage example.
        license: the weights' license (card and config.json); default: the pretrained tag's, if the model holds
            its weights unchanged (see :func:`card_facts`), else none stated.
        datasets: what the weights were trained on (Hub dataset ids); default: as for ``license``.
        tags: extra model card tags.
        description: the model card's opening paragraph.
        data_config: preprocessing to record, if it differs from the model's pretrained cfg.
        label_names: class names, if the model's pretrained cfg has none that fit its classifier.
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
    if not getattr(model, 'pretrained_cfg', None):
        raise ValueError('The model has no pretrained_cfg: create it with timm.create_model(...) to export it.')
    with atomic_folder(out_dir) as tmp:
        digest = write_model_files(model, tmp, label_names=label_names, data_config=data_config,
                                   license=card_facts(model, license).license)
        card = model_card(model, digest, repo_id=repo_id, license=license, datasets=datasets, tags=tags,
                          description=description)
        card.save(tmp / 'README.md')
    return out_dir
