"""Time every fault of the loopback Hub against huggingface_hub alone and against timm_sknet, for the docs' table.

    python tests/measure_hub_faults.py --out benchmarks/results/hub_faults.md   # about 4 minutes (two stalls)

Each fault is served by tests/local_hub.py (the Hub on 127.0.0.1, its CDN on 127.0.0.2) for a 3 MB weights file,
with a fresh cache per call; the call is ``hf_hub_download`` as timm makes it, or
``timm_sknet.hub.fetch_verified_weights``. Printed as a markdown table: the wall time to the exception (or to the
file returned) and what it said.
"""
import argparse
import hashlib
import importlib.metadata
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')

import huggingface_hub  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import constants, hf_hub_download  # noqa: E402
from local_hub import LocalHub  # noqa: E402  (this folder is on sys.path when the script runs)
from safetensors.torch import save  # noqa: E402

from timm_sknet.hub import fetch_verified_weights  # noqa: E402

REPO = 'timm/skresnet18.ra_in1k'
WEIGHTS = 'model.safetensors'
DESCRIPTIONS = {
    'stall': 'the CDN stalls mid-body', 'reset': 'the CDN resets the connection', 'truncate': 'the CDN truncates',
    'corrupt': 'the CDN corrupts a byte (same size)', 'expired': 'the signed URL has expired (403)',
    '500': 'the Hub answers 500, file not cached', 'unreachable': 'the Hub is unreachable, file not cached',
    'gated': 'the repository is gated, no token', 'xet-cas-404': "Xet: the CAS does not know the file",
}
FAULTS = tuple(DESCRIPTIONS)


def _serve(hub: LocalHub, fault: str, data: bytes) -> None:
    hub.repos.clear()
    hub.add_commit(REPO, {'model.safetensors': data})
    hub.xet = fault.startswith('xet')
    hub.fault = None if fault in ('unreachable', 'xet-cas-404') else fault
    if fault == 'xet-cas-404':
        hub.xet_file = lambda file_hash: None


def _call(fn, data: bytes) -> str:
    start = time.perf_counter()
    try:
        path = fn()
    except Exception as e:  # noqa: BLE001  (the point is which exception, and when)
        text = str(e).splitlines()[0]
        what = text.split(f'(file {WEIGHTS}): ', 1)[-1].split('; ')[0].split('. ')[0][:100]
        what = f'`{type(e).__name__}`: {what}'
    else:
        ok = hashlib.sha256(open(path, 'rb').read()).digest() == hashlib.sha256(data).digest()
        what = 'returns the file' if ok else '**returns a corrupted file, cached**'
    return f'{time.perf_counter() - start:.1f} s, {what}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args()
    data = save({'w': torch.randn(750_000)})
    lines = [f'huggingface_hub {huggingface_hub.__version__}, hf_xet {importlib.metadata.version("hf_xet")}, '
             f'{len(data) / 1e6:.0f} MB file, default timeouts; `python tests/measure_hub_faults.py`.', '',
             '| fault | `hf_hub_download` alone | `timm_sknet.hub.fetch_verified_weights` |', '|---|---|---|']
    for fault in FAULTS:
        cells = []
        for fn in (lambda: hf_hub_download(REPO, WEIGHTS, library_name='timm'),
                   lambda: fetch_verified_weights(REPO, label='sknet18.ra_in1k')):
            with LocalHub() as hub:
                _serve(hub, fault, data)
                endpoint = 'http://127.0.0.1:9' if fault == 'unreachable' else hub.endpoint
                constants.ENDPOINT = endpoint
                constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + '/{repo_id}/resolve/{revision}/{filename}'
                constants.HF_HUB_CACHE = tempfile.mkdtemp()
                cells.append(_call(fn, data))
        lines.append(f'| {DESCRIPTIONS[fault]} | {cells[0]} | {cells[1]} |')
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
