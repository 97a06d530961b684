"""Command line: ``timm-sknet`` or ``python -m timm_sknet``.

With no subcommand it runs the main job: the model table, then one forward pass.
"""
import argparse
import sys
import time
from typing import List, Optional

import torch

import timm

from .complexity import PUBLISHED, measure

__all__ = ['main', 'model_table']


def model_table() -> str:
    """Markdown table of every registered sknet: measured params/GMACs at 224 beside the published ones."""
    rows = [
        '| model | pretrained tags | params (M) | published | GMACs | published | top-1 | source |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name in timm.list_models('sknet*'):
        params, macs = measure(name)
        tags = ', '.join(t.split('.', 1)[1] for t in timm.list_pretrained(f'{name}.*')) or '-'
        ref = PUBLISHED.get(name)
        published = (f'{ref.params_m:.2f}', f'{ref.gmacs:.3f}', f'{ref.top1:.2f}' if ref.top1 else '-',
                     ref.source) if ref else ('-', '-', '-', '-')
        rows.append(
            f'| {name} | {tags} | {params / 1e6:.2f} | {published[0]} | {macs / 1e9:.3f} | {published[1]} '
            f'| {published[2]} | {published[3]} |')
    return '\n'.join(rows)


def _cmd_list(args: argparse.Namespace) -> int:
    print(model_table())
    return 0


def _cmd_main_job(args: argparse.Namespace) -> int:
    print(model_table())
    model = timm.create_model(args.model).eval()
    size = model.pretrained_cfg['input_size']
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(x)
    elapsed = time.perf_counter() - start
    print(f'\n{args.model} (random init) forward of 1x{"x".join(map(str, size))}: '
          f'logits {tuple(logits.shape)}, finite={bool(torch.isfinite(logits).all())}, {elapsed * 1e3:.0f} ms')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='timm-sknet', description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='sknet50', help='model for the main job (default: sknet50)')
    parser.set_defaults(func=_cmd_main_job)
    sub = parser.add_subparsers(title='commands')
    p = sub.add_parser('list', help='registered models with measured and published params/GMACs')
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    import timm_sknet  # noqa: F401  (registers the models)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
