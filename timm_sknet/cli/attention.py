"""``timm-sknet attention``: the paper's scale analysis on images or generated shapes."""
import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .arguments import CLIError, SubParsers, add_model_args, data_config, load_model, warn_random


def run(args: argparse.Namespace) -> int:
    from ..analysis.scale import centred_shapes, run_scale_analysis
    from ..data.images import load_image
    if not args.images and not args.synthetic:
        raise CLIError('give image files, or --synthetic N to generate N test images')
    if args.images and args.synthetic:
        raise CLIError('give either image files or --synthetic N, not both')
    if any(s <= 0 for s in args.scales):
        raise CLIError(f'--scales must be positive, got {" ".join(map(str, args.scales))}')
    images: Sequence[Any] = [load_image(p) for p in args.images]  # a bad file fails before the model is built
    model = load_model(args.model, args.pretrained, args.checkpoint)
    if not images:
        images = centred_shapes(args.synthetic, image_size=data_config(model, args.img_size)['input_size'][-1])
    warn_random(args)
    out = Path(args.out)
    result = run_scale_analysis(model, images, args.scales, data_config=data_config(model, args.img_size),
                                batch_size=args.batch_size)
    result.model_name = args.model
    print(result.table())
    csv_path = result.write_csv(out / 'attention.csv')
    print(f'wrote {csv_path}')
    try:
        png = result.save_plot(out / 'attention.png')
        print(f'wrote {png}')
    except ModuleNotFoundError as e:
        print(f'timm-sknet: note: no plot written: {e}', file=sys.stderr)
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..analysis.scale import DEFAULT_SCALES
    p = sub.add_parser('attention', help="the paper's scale analysis: SK attention (large - small kernel) per "
                                         'unit as the object grows')
    p.add_argument('images', nargs='*', metavar='IMAGE', help='image files (or use --synthetic N)')
    add_model_args(p)
    p.add_argument('--synthetic', type=int, default=0, metavar='N', help='use N generated images instead')
    p.add_argument('--scales', type=float, nargs='+', default=list(DEFAULT_SCALES),
                   help='object enlargement factors (the paper: 1, 1.5 and 2)')
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--out', required=True, metavar='DIR', help='folder for attention.csv and attention.png')
    p.set_defaults(func=run)
