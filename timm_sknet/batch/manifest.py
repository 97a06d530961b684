"""What run wrote an output, so that ``--resume`` never mixes two runs in one file.

``OUTPUT.manifest.json`` (``preds.csv`` gives ``preds.csv.manifest.json``) is written atomically before the first row:
the model, the weights' identity, the input size, top-k, the embeddings file and a digest of the class names and
WordNet ids. A resume compares it with the resumed run's and refuses any difference, naming each.
"""
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..file_io import write_text_atomic

__all__ = ['manifest_path', 'run_manifest', 'start_manifest']

#: the manifest's keys as the refusal names them, and the option to look at
_OPTIONS = {'model': '--model', 'weights': '--checkpoint / --random-weights, or the published weights changed',
            'input_size': '--img-size', 'topk': '--topk', 'embeddings': '--embeddings',
            'labels_sha256': "the model's class names"}


def manifest_path(output: Path) -> Path:
    """``preds.csv`` -> ``preds.csv.manifest.json``, beside it (``preds.jsonl`` has its own)."""
    return output.with_name(f'{output.name}.manifest.json')


def run_manifest(model: str, weights: Any, input_size: Sequence[int], topk: int, embeddings: Optional[Path],
                 labels: Sequence[str], wnids: Sequence[str]) -> Dict[str, Any]:
    """The manifest of a run: ``weights`` as :func:`timm_sknet.cli.weights.weights_identity` gives it."""
    names = json.dumps([list(labels), list(wnids)], ensure_ascii=False).encode('utf-8')
    return {'model': model, 'weights': weights, 'input_size': list(input_size), 'topk': topk,
            'embeddings': str(embeddings) if embeddings else None, 'labels_sha256': hashlib.sha256(names).hexdigest()}


def start_manifest(output: Path, manifest: Dict[str, Any], resume: bool) -> None:
    """Write ``manifest`` beside ``output``; on ``resume``, first refuse one that differs from the earlier run's.

    Raises:
        ValueError: resuming with different settings (each named, old -> new), or resuming an output that has
            no manifest (written by an older version, or not by ``timm-sknet predict``).
    """
    path = manifest_path(output)
    if resume and path.exists():
        old = json.loads(path.read_text(encoding='utf-8'))
        changed = [f'{key} {json.dumps(old.get(key))} -> {json.dumps(new)} ({_OPTIONS[key]})'
                   for key, new in manifest.items() if old.get(key) != new]
        if changed:
            raise ValueError(f'--resume: this run differs from the one that wrote {output}: {"; ".join(changed)}. '
                             f'Resume with the options of the first run (see {path}), or write to a new --output')
    elif resume and output.exists():
        raise ValueError(f'--resume: {output} has no {path.name}, so nothing says which model and options wrote '
                         'it; predict into a new --output (an older timm-sknet wrote it without a manifest)')
    write_text_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False) + '\n')
