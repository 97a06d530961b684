"""``timm-sknet list``: the model table."""
import argparse

import timm

from ..models.complexity import PAPER, WEIGHTS_TOP1, measure
from .arguments import SubParsers

MODEL_TABLE_HEADER = ('| model | `pretrained=True` loads | params (M) | GMACs | top-1 | top-1 source | paper: params (M) '
                      '| paper: GMACs | paper: top-1 |')


def model_table() -> str:
    """Markdown table of every registered sknet: measured params / GMACs at 224, the ImageNet-1k top-1 of the
    weights ``pretrained=True`` loads (its publisher's figure), and the paper's figures."""
    rows = [MODEL_TABLE_HEADER, '|---' * MODEL_TABLE_HEADER.count(' | ') + '|---|']
    for name in timm.list_models('sknet*'):
        params, macs = measure(name)
        cfg = timm.models.get_pretrained_cfg(name)
        loads = cfg.tag if cfg is not None and cfg.has_weights and cfg.tag else '-'
        top1 = WEIGHTS_TOP1.get(f'{name}.{loads}')
        paper = PAPER.get(name)
        rows.append(' | '.join([
            f'| {name}', loads, f'{params / 1e6:.2f}', f'{macs / 1e9:.3f}',
            f'{top1.top1:.2f}' if top1 else '-', top1.source if top1 else '-',
            *((f'{paper.params_m:.1f}', f'{paper.gmacs:.2f}', f'{paper.top1:.2f}') if paper else ('-',) * 3)]) + ' |')
    return '\n'.join(rows)


def run(args: argparse.Namespace) -> int:
    print(model_table())
    return 0


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser('list', help="the model table: measured params and GMACs, the published top-1 of the weights "
                                    "pretrained=True loads, the paper's figures")
    p.set_defaults(func=run)
