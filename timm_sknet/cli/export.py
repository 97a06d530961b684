"""``timm-sknet export``: ONNX, TorchScript or OpenVINO IR, checked against PyTorch."""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from .arguments import (
    CLIError,
    SubParsers,
    add_model_args,
    add_runtime_args,
    calibration_images,
    load_model,
    warn_random,
)


def _export_file(model: nn.Module, args: argparse.Namespace, input_size: Optional[Sequence[int]]) -> Path:
    from ..inference import export_onnx, export_torchscript
    if args.format == 'torchscript':
        return export_torchscript(model, args.out, method=args.method, input_size=input_size)
    if args.format == 'onnx':
        return export_onnx(model, args.out, input_size=input_size, opset=args.opset, dynamic_size=args.dynamic_size)
    from ..inference.export import resolve_input_size
    from ..inference.openvino_ir import export_openvino
    size = resolve_input_size(model, input_size)
    calibration = calibration_images(model, args, size)
    return export_openvino(model, args.out, precision=args.precision, input_size=size, calibration=calibration,
                           dynamic_size=args.dynamic_size)


def run(args: argparse.Namespace) -> int:
    from ..inference import BackendUnavailable, OptimizationError, fuse_model
    args.backend = {'onnx': 'onnxruntime', 'torchscript': 'eager'}.get(args.format, args.format)
    if args.precision != 'fp32' and args.format != 'openvino':
        raise CLIError(f'--precision {args.precision} is an OpenVINO setting: use the openvino format, or fp32 '
                       f'for {args.format}')
    if Path(args.out).exists() and not args.force:  # before the model loads
        raise CLIError(f'{args.out} exists: pass --force to replace it, or choose another OUT')
    if args.out_indices and not args.features_only:
        raise CLIError('--out-indices chooses the feature maps of a --features-only backbone; add --features-only')
    features = dict(features_only=True, **({'out_indices': tuple(args.out_indices)} if args.out_indices else {})) \
        if args.features_only else {}
    model = load_model(args.model, args.pretrained, args.checkpoint, **features)
    warn_random(args)
    if args.fused:
        model = fuse_model(model)
    input_size = (3, args.img_size, args.img_size) if args.img_size else None
    try:
        path = _export_file(model, args, input_size)
    except ModuleNotFoundError as e:
        extra = 'openvino' if args.format == 'openvino' else 'export'
        raise CLIError(f'{args.format} export needs {e.name or args.format}: pip install "timm-sknet[{extra}]"') from None
    except (BackendUnavailable, OptimizationError) as e:
        raise CLIError(str(e)) from None
    what = ''.join((', fused' if args.fused else '', ', features only' if args.features_only else '',
                    ', any input size' if args.dynamic_size else ''))
    print(f'wrote {path} ({args.format}, {args.precision}, {args.model}{what}, checked against PyTorch)')
    if args.format == 'openvino':
        from ..inference.openvino_ir import compile_config
        print(f"compile it as it was checked: ov.Core().compile_model('{path}/model.xml', 'CPU', "
              f'{compile_config(args.precision)})')
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..inference.export import MIN_ONNX_OPSET
    p = sub.add_parser('export', help='write ONNX, TorchScript or OpenVINO IR (checked against PyTorch before it is kept)')
    p.add_argument('format', choices=('onnx', 'torchscript', 'openvino'),
                   help='onnx (onnxruntime and other ONNX runtimes), torchscript, or openvino (IR folder)')
    p.add_argument('out', metavar='OUT', help='file to write (.onnx / .pt), or a folder for openvino')
    add_model_args(p)
    p.add_argument('--force', action='store_true', help='replace OUT if it exists (refused otherwise)')
    p.add_argument('--fused', action='store_true', help='fold BatchNorms first (timm_sknet.inference.fuse_model)')
    p.add_argument('--img-size', type=int, default=None, help="example input size (default: pretrained_cfg's)")
    p.add_argument('--opset', type=int, default=MIN_ONNX_OPSET, help=f'ONNX opset (default: {MIN_ONNX_OPSET})')
    p.add_argument('--method', choices=('script', 'trace'), default='script', help='TorchScript method')
    p.add_argument('--features-only', action='store_true',
                   help="export the backbone: one output per feature map (timm's features_only), for detectors")
    p.add_argument('--out-indices', type=int, nargs='+', default=None, metavar='I',
                   help="with --features-only: which feature maps, 0 (stride 2) to 4 (stride 32) (default: timm's, all five)")
    p.add_argument('--dynamic-size', action='store_true',
                   help='onnx and openvino: any input height and width, not only --img-size (checked at a second, odd size; '
                        'TorchScript takes any size as it is)')
    add_runtime_args(p, default_backend=None)  # the format names the runtime
    p.set_defaults(func=run)
