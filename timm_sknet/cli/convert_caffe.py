"""``timm-sknet convert-caffe``: the authors' Caffe SKNet-50/101 as a Hugging Face Hub folder."""
import argparse
import json

from .arguments import CLIError, SubParsers


def run(args: argparse.Namespace) -> int:
    from ..caffe import CaffeError, convert_caffe
    try:
        out = convert_caffe(args.prototxt, args.caffemodel, args.out, mean_bgr=args.mean_bgr, repo_id=args.repo_id,
                            overwrite=args.overwrite)
    except CaffeError as e:
        raise CLIError(str(e)) from None
    config = json.loads((out / 'config.json').read_text(encoding='utf-8'))
    print(f"wrote {out} ({config['architecture']}); load it with timm.create_model('local-dir:{out}', "
          f'pretrained=True), or --model local-dir:{out}')
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..caffe import CAFFE_MEAN_BGR
    p = sub.add_parser('convert-caffe', help="the authors' Caffe SKNet-50/101 (prototxt + caffemodel) as a Hub folder")
    p.add_argument('prototxt', metavar='PROTOTXT', help='sknet50.prototxt or sknet101.prototxt of github.com/implus/SKNet')
    p.add_argument('caffemodel', metavar='CAFFEMODEL', help='the matching .caffemodel')
    p.add_argument('out', metavar='OUT_DIR', help='folder to create (config.json, model.safetensors, README.md)')
    p.add_argument('--mean-bgr', type=float, nargs=3, default=list(CAFFE_MEAN_BGR), metavar=('B', 'G', 'R'),
                   help='means Caffe subtracted from 0-255 BGR pixels')
    p.add_argument('--repo-id', default=None, help='the Hub repo meant for it (used in the model card)')
    p.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT_DIR (atomically)')
    p.set_defaults(func=run)
