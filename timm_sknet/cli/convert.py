"""``timm-sknet convert`` and ``convert-caffe``: Hugging Face Hub folders from weights or the authors' Caffe nets."""
import argparse
from pathlib import Path

from .arguments import CLIError, SubParsers, add_model_args, load_model


def run(args: argparse.Namespace) -> int:
    from ..hub import export_hub_folder
    common = dict(repo_id=args.repo_id, overwrite=args.overwrite, license=args.license, description=args.description,
                  datasets=args.dataset)  # None: the card states what is known of the weights, else "unknown"
    out_dir = Path(args.out)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not args.overwrite:
        raise CLIError(f'{out_dir} exists and is not empty; pass --overwrite to replace it, or choose another OUT')
    if args.checkpoint:
        out = export_hub_folder(load_model(args.model, checkpoint=args.checkpoint), args.out, **common)
    elif args.pretrained:
        out = export_hub_folder(load_model(args.model, pretrained=True), args.out, **common)
    else:
        raise CLIError('convert needs weights: pass --checkpoint FILE or --pretrained')
    print(f"wrote {out}; load it with timm.create_model('local-dir:{out}', pretrained=True), or --model local-dir:{out}")
    return 0


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser('convert', help='write a Hugging Face Hub folder (config.json, model.safetensors, README.md)')
    p.add_argument('out', metavar='OUT', help='folder to create')
    add_model_args(p)
    p.add_argument('--repo-id', default=None, help='the Hub repo meant for it (used in the model card)')
    p.add_argument('--dataset', action='append', default=None, metavar='HUB_ID',
                   help="what the weights were trained on, for the model card (repeatable; default: the pretrained "
                        "tag's data set when the weights are its own, else unknown)")
    p.add_argument('--license', default=None,
                   help="the weights' license (default: the pretrained tag's when the weights are its own, else none)")
    p.add_argument('--description', default=None, help="the model card's opening paragraph (default: a generic one)")
    p.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT (atomically)')
    p.set_defaults(func=run)
