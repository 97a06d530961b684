"""Command line: ``timm-sknet`` or ``python -m timm_sknet``.

With no subcommand it runs the main job: the model table, then the embedded model's predictions and scale analysis.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, TypeAlias

import torch
from torch import nn

import timm

from ..errors import WeightsError, command_line_context
from ..hub.failures import hub_model_errors
from ..models.checkpoint import CheckpointError, model_from_checkpoint
from ..models.complexity import PAPER, WEIGHTS_TOP1, measure
from .classify import class_names
from .help_format import Parser
from .images import ImageError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ['CLIError', 'build_parser', 'main', 'model_table']

#: Exceptions that are the user's to fix: printed as one ``timm-sknet: error: ...`` line, exit status 2.
#: ``FileExistsError`` / ``FileNotFoundError`` come from the writers (existing output folder, missing folder).
USER_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, ImageError, WeightsError, CheckpointError,
               FloatingPointError)
#: ``predict --workers``: DataLoader processes decoding images
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
#: what ``add_subparsers`` returns (generic for type checkers only, hence the string)
SubParsers: TypeAlias = 'argparse._SubParsersAction[Parser]'


class CLIError(Exception):
    """A mistake in the command line (unknown model, checkpoint that does not fit, ...); the message says what to do."""


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


# ---------------------------------------------------------------------------------------------------------
# shared helpers: model loading and preprocessing
# ---------------------------------------------------------------------------------------------------------

def _add_model_args(p: argparse.ArgumentParser, default: str = 'sknet50', pretrained: bool = True) -> None:
    p.add_argument('--model', default=default, help=f'registered model name, optionally with a tag (default: {default})')
    if pretrained:
        p.add_argument('--pretrained', action='store_true', help="load the model's published pretrained weights")
    p.add_argument('--checkpoint', metavar='FILE',
                   help='local weights: .safetensors, or .pth/.pth.tar/.bin (read with weights_only=True)')


def load_model(name: str, pretrained: bool = False, checkpoint: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` in eval mode, or the model a local ``checkpoint`` fits, loaded strictly.

    Raises:
        CLIError: unknown model name.
        CheckpointError: a checkpoint that cannot be read or does not fit the model.
        FileNotFoundError: the checkpoint does not exist.
        WeightsError: pretrained weights could not be provided.
    """
    from timm.models import split_model_name_tag
    arch, _ = split_model_name_tag(name)
    if not name.startswith(('hf-hub:', 'local-dir:')) and not timm.is_model(arch):
        raise CLIError(f'unknown model {name!r}; choose one of {", ".join(timm.list_models("sknet*"))} '
                       f'(pretrained tags: {", ".join(timm.list_pretrained("sknet*")) or "none"}), '
                       "or a Hub repo as 'hf-hub:org/repo', or an exported folder as 'local-dir:/path/to/folder'")
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, name, **kwargs)
    else:
        with hub_model_errors(name):  # hf-hub: timm fetches config.json itself, before any timm_sknet code
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return model.eval()


def _data_config(model: nn.Module, img_size: Optional[int]) -> Dict[str, Any]:
    """Preprocessing from the model's pretrained_cfg; ``img_size`` overrides the input size only."""
    from timm.data import resolve_data_config
    return resolve_data_config({'img_size': img_size} if img_size else {}, model=model)


def _warn_random(args: argparse.Namespace) -> None:
    if not getattr(args, 'pretrained', False) and not args.checkpoint:
        print(f'timm-sknet: note: {args.model} has random weights (pass --pretrained or --checkpoint FILE)',
              file=sys.stderr)


def _add_runtime_args(p: argparse.ArgumentParser, default_backend: Optional[str]) -> None:
    from ..inference import BACKENDS, PRECISIONS
    if default_backend is not None:
        p.add_argument('--backend', choices=('auto', *BACKENDS), default=default_backend,
                       help=f'runtime (default: {default_backend}; auto picks the fastest installed and says which)')
    p.add_argument('--precision', choices=PRECISIONS, default='fp32',
                   help='fp32 (default), bf16 (CPUs with native bf16, GPUs) or int8 (openvino, calibrated)')
    p.add_argument('--calibration-dir', default=None, metavar='DIR',
                   help='int8: a folder of images like yours (default: the synthetic shapes)')
    p.add_argument('--calibration-images', type=int, default=300, metavar='N',
                   help='int8: how many calibration images (default: 300)')


def _calibration(model: nn.Module, args: argparse.Namespace,
                 input_size: Sequence[int]) -> Optional[List[torch.Tensor]]:
    """int8: ``--calibration-images`` from ``--calibration-dir`` or the synthetic shapes; else None."""
    if args.precision != 'int8':
        return None
    from ..inference import check_backend_precision
    from .calibration import calibration_batches
    check_backend_precision(args.backend, args.precision)  # before spending time on calibration images
    if args.calibration_dir is None:
        print('timm-sknet: note: int8 calibrated on the synthetic shapes; pass --calibration-dir with '
              'images like yours for a better int8 model', file=sys.stderr)
    return calibration_batches(model, args.calibration_dir, num_images=args.calibration_images, input_size=input_size)


def _optimized(model: nn.Module, args: argparse.Namespace, input_size: Sequence[int]) -> nn.Module:
    """``model`` through ``timm_sknet.inference.optimize`` at ``--backend`` / ``--precision``."""
    from ..inference import BackendUnavailable, OptimizationError, optimize
    try:
        calibration = _calibration(model, args, input_size)
        optimized = optimize(model, args.backend, args.precision, input_size=input_size, calibration=calibration)
    except (BackendUnavailable, OptimizationError) as e:
        raise CLIError(str(e)) from None
    _say_what_runs(optimized)
    return optimized


def _say_what_runs(optimized: nn.Module) -> None:
    """One stderr line: the backend ``optimize`` chose, why, and its settings."""
    print(f'timm-sknet: {optimized.backend} at {optimized.precision} ({optimized.reason}): {optimized.description}',
          file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------
# subcommands: one _cmd_<name> and one _add_<name>_parser each
# ---------------------------------------------------------------------------------------------------------

def _cmd_list(args: argparse.Namespace) -> int:
    print(model_table())
    return 0


def _add_list_parser(sub: SubParsers) -> None:
    p = sub.add_parser('list', help="the model table: measured params and GMACs, the published top-1 of the weights "
                                    "pretrained=True loads, the paper's figures")
    p.set_defaults(func=_cmd_list)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import BackendUnavailable, OptimizationError
    from .bulk import BatchPredictor, find_images
    from .bulk_output import PredictionFiles, Printer, check_paths, run_bulk

    if args.topk < 1 or args.batch_size < 1 or args.workers < 0:
        raise CLIError('--topk and --batch-size must be >= 1, --workers >= 0')
    if not args.images and args.file_list is None:
        raise CLIError('give image files, folders or globs, or --file-list FILE')
    output, embeddings = (Path(p) if p else None for p in (args.output, args.embeddings))
    try:
        check_paths(output, embeddings, args.resume)
    except ValueError as e:
        raise CLIError(str(e)) from None
    paths = find_images(args.images, args.file_list)  # usage mistakes before the model is built
    model = load_model(args.model, args.pretrained, args.checkpoint)
    _warn_random(args)
    try:
        calibration = _calibration(model, args, _data_config(model, args.img_size)['input_size'])
        predictor = BatchPredictor(model, backend=args.backend, precision=args.precision, img_size=args.img_size,
                                   topk=args.topk, embeddings=embeddings is not None, calibration=calibration)
        _say_what_runs(predictor.model)
        sink = (PredictionFiles(output, predictor.columns, embeddings, predictor.embedding_size) if output
                else Printer(predictor.topk))
    except (ValueError, BackendUnavailable, OptimizationError) as e:
        raise CLIError(str(e)) from None
    _, failed = run_bulk(predictor, paths, sink, batch_size=args.batch_size, workers=args.workers)
    return 1 if failed else 0


def _add_predict_parser(sub: SubParsers) -> None:
    from .bulk import IMAGE_EXTENSIONS
    p = sub.add_parser(
        'predict', help='top-k classes of image files, folders, globs or a file list (printed, or CSV/JSONL)',
        description='Top-k classes of every image named: printed, or written to --output FILE. A file that cannot be '
                    'read is reported on stderr (and in OUTPUT.errors.csv) and skipped. Exit status: 0 every image '
                    'predicted, 1 some could not be read (the others were), 2 a usage error (nothing was done).')
    p.add_argument('images', nargs='*', metavar='IMAGE',
                   help=f'image files, folders (searched recursively for {" ".join(IMAGE_EXTENSIONS)}) or quoted '
                        "globs ('photos/**/*.jpg')")
    p.add_argument('--file-list', metavar='FILE', default=None,
                   help='a file naming one image a line (relative to the current folder; - reads stdin)')
    _add_model_args(p)
    p.add_argument('--topk', type=int, default=5, help='classes per image (default: 5)')
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--batch-size', type=int, default=8, help='images per forward pass (default: 8)')
    p.add_argument('--workers', type=int, default=DEFAULT_WORKERS,
                   help='DataLoader processes decoding images, min(4, CPUs) by default; the model runs in the main '
                        'process; 0 decodes in the main process')
    p.add_argument('--output', metavar='FILE', default=None,
                   help='write rows to FILE (.csv or .jsonl): path, then label_i, index_i, probability_i of the top k')
    p.add_argument('--embeddings', metavar='FILE', default=None,
                   help="also write each image's pre_logits to FILE (.npy or .safetensors), row i = output row i")
    p.add_argument('--resume', action='store_true',
                   help='continue an interrupted run of the same command: only images without a row or error yet')
    _add_runtime_args(p, default_backend='eager')
    p.set_defaults(func=_cmd_predict)


def _bench_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The runner's keyword arguments from the command line (each runner takes its own)."""
    from .benchmark import OUR_PATHS, ConcurrencyRunner
    if args.what == 'serve':
        return dict(our_model=args.model or 'sknet50', backend='eager' if args.backend == 'all' else args.backend,
                    image_size=args.image_size, quick=args.quick)
    options: Dict[str, Any] = dict(runs=args.runs, device=args.device, quick=args.quick, image_size=args.image_size)
    options.update({k: v for k, v in (('our_model', args.model), ('timm_model', args.timm_model)) if v})
    if args.what in ('inference', 'concurrency'):
        known = OUR_PATHS if args.what == 'inference' else ConcurrencyRunner.PATHS
        paths = [(b, p) for b, p in known if args.backend in ('all', b) and args.precision in ('all', p)]
        if not paths:
            raise CLIError(f'no {args.what} path has backend {args.backend} and precision {args.precision}')
        options.update(paths=None if args.backend == args.precision == 'all' else paths,
                       batch_sizes=args.batch_sizes or ((1, 8) if args.what == 'inference' else (1,)))
    else:
        options.update(memory=not args.no_memory)
        if args.what == 'backbone':
            options.update(batch_sizes=args.batch_sizes or (1, 2))
    return options


def _cmd_bench(args: argparse.Namespace) -> int:
    from .benchmark import RUNNERS, int8_accuracy, markdown, write_report
    if args.out and not Path(args.out).parent.is_dir():
        raise FileNotFoundError(f'folder {Path(args.out).parent} does not exist; create it or choose another --out')
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.what == 'int8-accuracy':
        report = int8_accuracy(60, 8, log=log) if args.quick else int8_accuracy(log=log)
    else:
        report = RUNNERS[args.what](**_bench_options(args), log=log).run()
    print(markdown(report))
    if args.out:
        print('wrote {} and {}'.format(*write_report(report, Path(args.out))), file=sys.stderr)
    return 0


def _add_bench_parser(sub: SubParsers) -> None:
    from ..inference import BACKENDS, PRECISIONS
    p = sub.add_parser('bench', help='speed against timm\'s own SK models with the same weights (see benchmarks/)')
    p.add_argument('what', nargs='?', default='inference',
                   choices=('inference', 'eager', 'backbone', 'concurrency', 'int8-accuracy', 'serve'),
                   help='inference: every backend and precision of optimize, vs timm run the same ways; '
                        'eager: eager inference and training steps with peak memory; backbone: features_only at '
                        '640 px as detectors run it; concurrency: one optimized model called from 1, 2 and 4 '
                        'threads at once, per backend; int8-accuracy: int8 against fp32; serve: the HTTP service '
                        'under 1, 2 and 4 clients (--backend: default eager)')
    p.add_argument('--quick', action='store_true', help='smoke test in seconds: proves it runs, measures nothing')
    p.add_argument('--model', default=None, help='our model (default: sknet50; sknet18 with --quick)')
    p.add_argument('--timm-model', default=None,
                   help="timm's twin of --model (default: skresnext50_32x4d; skresnet18 with --quick)")
    p.add_argument('--backend', choices=('all', *BACKENDS), default='all',
                   help='inference, concurrency: only this backend')
    p.add_argument('--precision', choices=('all', *PRECISIONS), default='all',
                   help='inference, concurrency: only this precision')
    p.add_argument('--batch-sizes', type=int, nargs='+', default=None,
                   help='inference: default 1 8; backbone: default 1 2; concurrency: default 1')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--runs', type=int, default=9, help='timed runs of everything, alternating (median reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--image-size', type=int, default=None, help='default: 224; backbone: 640')
    p.add_argument('--no-memory', action='store_true', help='eager, backbone: skip the peak-memory runs')
    p.add_argument('--out', default=None, help='write OUT.json and OUT.md (path without extension)')
    p.set_defaults(func=_cmd_bench)


def _export_file(model: nn.Module, args: argparse.Namespace, input_size: Optional[Sequence[int]]) -> Path:
    from ..inference import export_onnx, export_torchscript
    if args.format == 'torchscript':
        return export_torchscript(model, args.out, method=args.method, input_size=input_size)
    if args.format == 'onnx':
        return export_onnx(model, args.out, input_size=input_size, opset=args.opset)
    from ..inference.export import resolve_input_size
    from ..inference.openvino_ir import export_openvino
    size = resolve_input_size(model, input_size)
    calibration = _calibration(model, args, size)
    return export_openvino(model, args.out, precision=args.precision, input_size=size, calibration=calibration)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..inference import BackendUnavailable, OptimizationError, fuse_model
    args.backend = {'onnx': 'onnxruntime', 'torchscript': 'eager'}.get(args.format, args.format)
    if args.precision != 'fp32' and args.format != 'openvino':
        raise CLIError(f'--precision {args.precision} is an OpenVINO setting: use the openvino format, or fp32 '
                       f'for {args.format}')
    model = load_model(args.model, args.pretrained, args.checkpoint)
    _warn_random(args)
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
    print(f'wrote {path} ({args.format}, {args.precision}, {args.model}{", fused" if args.fused else ""}, '
          f'checked against PyTorch)')
    if args.format == 'openvino':
        from ..inference.openvino_ir import compile_config
        print(f"compile it as it was checked: ov.Core().compile_model('{path}/model.xml', 'CPU', "
              f'{compile_config(args.precision)})')
    return 0


def _add_export_parser(sub: SubParsers) -> None:
    from ..inference.export import MIN_ONNX_OPSET
    p = sub.add_parser('export', help='write ONNX, TorchScript or OpenVINO IR (checked against PyTorch before it is kept)')
    p.add_argument('format', choices=('onnx', 'torchscript', 'openvino'),
                   help='onnx (onnxruntime and other ONNX runtimes), torchscript, or openvino (IR folder)')
    p.add_argument('out', metavar='OUT', help='file to write (.onnx / .pt), or a folder for openvino')
    _add_model_args(p)
    p.add_argument('--fused', action='store_true', help='fold BatchNorms first (timm_sknet.inference.fuse_model)')
    p.add_argument('--img-size', type=int, default=None, help="example input size (default: pretrained_cfg's)")
    p.add_argument('--opset', type=int, default=MIN_ONNX_OPSET, help=f'ONNX opset (default: {MIN_ONNX_OPSET})')
    p.add_argument('--method', choices=('script', 'trace'), default='script', help='TorchScript method')
    _add_runtime_args(p, default_backend=None)  # the format names the runtime
    p.set_defaults(func=_cmd_export)


def _cmd_convert(args: argparse.Namespace) -> int:
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


def _add_convert_parser(sub: SubParsers) -> None:
    p = sub.add_parser('convert', help='write a Hugging Face Hub folder (config.json, model.safetensors, README.md)')
    p.add_argument('out', metavar='OUT', help='folder to create')
    _add_model_args(p)
    p.add_argument('--repo-id', default=None, help='the Hub repo meant for it (used in the model card)')
    p.add_argument('--dataset', action='append', default=None, metavar='HUB_ID',
                   help="what the weights were trained on, for the model card (repeatable; default: the pretrained "
                        "tag's data set when the weights are its own, else unknown)")
    p.add_argument('--license', default=None,
                   help="the weights' license (default: the pretrained tag's when the weights are its own, else none)")
    p.add_argument('--description', default=None, help="the model card's opening paragraph (default: a generic one)")
    p.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT (atomically)')
    p.set_defaults(func=_cmd_convert)


def _cmd_convert_caffe(args: argparse.Namespace) -> int:
    from .caffe import CaffeError, convert_caffe
    try:
        out = convert_caffe(args.prototxt, args.caffemodel, args.out, mean_bgr=args.mean_bgr, repo_id=args.repo_id,
                            overwrite=args.overwrite)
    except CaffeError as e:
        raise CLIError(str(e)) from None
    config = json.loads((out / 'config.json').read_text(encoding='utf-8'))
    print(f"wrote {out} ({config['architecture']}); load it with timm.create_model('local-dir:{out}', "
          f'pretrained=True), or --model local-dir:{out}')
    return 0


def _add_convert_caffe_parser(sub: SubParsers) -> None:
    from .caffe import CAFFE_MEAN_BGR
    p = sub.add_parser('convert-caffe', help="the authors' Caffe SKNet-50/101 (prototxt + caffemodel) as a Hub folder")
    p.add_argument('prototxt', metavar='PROTOTXT', help='sknet50.prototxt or sknet101.prototxt of github.com/implus/SKNet')
    p.add_argument('caffemodel', metavar='CAFFEMODEL', help='the matching .caffemodel')
    p.add_argument('out', metavar='OUT_DIR', help='folder to create (config.json, model.safetensors, README.md)')
    p.add_argument('--mean-bgr', type=float, nargs=3, default=list(CAFFE_MEAN_BGR), metavar=('B', 'G', 'R'),
                   help='means Caffe subtracted from 0-255 BGR pixels')
    p.add_argument('--repo-id', default=None, help='the Hub repo meant for it (used in the model card)')
    p.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT_DIR (atomically)')
    p.set_defaults(func=_cmd_convert_caffe)


def _cmd_attention(args: argparse.Namespace) -> int:
    from .images import load_image
    from .scale_analysis import centred_shapes, run_scale_analysis
    if not args.images and not args.synthetic:
        raise CLIError('give image files, or --synthetic N to generate N test images')
    if args.images and args.synthetic:
        raise CLIError('give either image files or --synthetic N, not both')
    if any(s <= 0 for s in args.scales):
        raise CLIError(f'--scales must be positive, got {" ".join(map(str, args.scales))}')
    images: Sequence[Any] = [load_image(p) for p in args.images]  # a bad file fails before the model is built
    model = load_model(args.model, args.pretrained, args.checkpoint)
    if not images:
        images = centred_shapes(args.synthetic, image_size=_data_config(model, args.img_size)['input_size'][-1])
    _warn_random(args)
    out = Path(args.out)
    result = run_scale_analysis(model, images, args.scales, data_config=_data_config(model, args.img_size),
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


def _add_attention_parser(sub: SubParsers) -> None:
    from .scale_analysis import DEFAULT_SCALES
    p = sub.add_parser('attention', help="the paper's scale analysis: SK attention (large - small kernel) per "
                                         'unit as the object grows')
    p.add_argument('images', nargs='*', metavar='IMAGE', help='image files (or use --synthetic N)')
    _add_model_args(p)
    p.add_argument('--synthetic', type=int, default=0, metavar='N', help='use N generated images instead')
    p.add_argument('--scales', type=float, nargs='+', default=list(DEFAULT_SCALES),
                   help='object enlargement factors (the paper: 1, 1.5 and 2)')
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--out', required=True, metavar='DIR', help='folder for attention.csv and attention.png')
    p.set_defaults(func=_cmd_attention)


def _cmd_main_job(args: argparse.Namespace) -> int:
    """The main job, offline: the model table, then the embedded model's predictions and scale analysis."""
    from .main_job import run_main_job
    print(model_table())
    print()
    run_main_job(args.out)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import run_train
    try:
        run_train(args)
    except ValueError as e:  # bad options or data (run_train's documented user errors)
        raise CLIError(str(e)) from e
    return 0


def _add_train_parser(sub: SubParsers) -> None:
    from .train_args import add_train_arguments
    p = sub.add_parser('train', help='train or fine-tune an sknet (ImageFolder or synthetic shapes; torchrun for DDP)')
    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)


def _serve_app(options: Dict[str, Any]) -> 'FastAPI':
    """The app ``timm-sknet serve`` runs, from its parsed options: the model loaded, optimized, then served."""
    from timm.data import create_transform

    from .serve import create_app
    args = argparse.Namespace(**options)
    torch.set_num_threads(args.threads)  # before optimize: onnxruntime and OpenVINO take their thread count from it
    model = load_model(args.model, args.pretrained, args.checkpoint)
    _warn_random(args)
    config = _data_config(model, args.img_size)
    labels = class_names(model)
    return create_app(_optimized(model, args, config['input_size']), transform=create_transform(**config),
                      labels=labels, topk=args.topk, concurrency=args.concurrency,
                      max_upload_bytes=args.max_upload_mb * 2 ** 20, max_pixels=args.max_pixels)


def serve_app_from_environment() -> 'FastAPI':
    """uvicorn's app factory in each ``serve --workers N`` process: the options the command put in the environment."""
    from .serve import ENV_OPTIONS
    return _serve_app(json.loads(os.environ[ENV_OPTIONS]))


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ENV_OPTIONS, missing_packages, run
    if missing_packages():
        raise CLIError(f'serve needs {", ".join(missing_packages())}: pip install "timm-sknet[serve]"')
    for flag in ('workers', 'concurrency', 'topk', 'max_upload_mb', 'max_pixels'):
        if getattr(args, flag) < 1:
            raise CLIError(f'--{flag.replace("_", "-")} must be >= 1, got {getattr(args, flag)}')
    # the cores this process may use, shared by every model call at once (torch threads back every backend)
    args.threads = args.threads or max(1, torch.get_num_threads() // (args.workers * args.concurrency))
    options = {k: v for k, v in vars(args).items() if k != 'func'}
    app: 'FastAPI | str' = _serve_app(options)  # here too with --workers: a bad option fails before the port opens
    if args.workers > 1:  # each worker builds its own model (an optimized model is not shared across processes)
        del app
        os.environ[ENV_OPTIONS] = json.dumps(options)
        app = f'{__name__}:serve_app_from_environment'
    run(app, host=args.host, port=args.port, workers=args.workers)
    return 0


def _add_serve_parser(sub: SubParsers) -> None:
    from .serve import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES
    p = sub.add_parser('serve', help='an HTTP service: POST an image to /predict, get its top-5 classes as JSON '
                                     '(docs/serving.md)')
    _add_model_args(p)
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--topk', type=int, default=5, help='classes per answer (default: 5)')
    _add_runtime_args(p, default_backend='auto')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on: the default answers this machine only, '
                                                       '0.0.0.0 every interface')
    p.add_argument('--port', type=int, default=8000, help='default: 8000; 0 picks a free one (printed)')
    p.add_argument('--workers', type=int, default=1, help='server processes, each with its own model (default: 1)')
    p.add_argument('--concurrency', type=int, default=1, help='model calls at once per process (default: 1)')
    p.add_argument('--threads', type=int, default=None,
                   help="runtime threads of each model call (default: the machine's cores / (workers x concurrency))")
    p.add_argument('--max-upload-mb', type=int, default=DEFAULT_MAX_UPLOAD_BYTES // 2 ** 20,
                   help='largest upload in MiB (default: %(default)s)')
    p.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS,
                   help='most pixels an image may have, checked before decoding (default: %(default)s)')
    p.set_defaults(func=_cmd_serve)


def _cmd_env(args: argparse.Namespace) -> int:
    from .env import print_env
    print_env(as_json=args.json)
    return 0


def _add_env_parser(sub: SubParsers) -> None:
    p = sub.add_parser('env', help='versions, machine, Hub cache and the optimize backends that run here: '
                                   'paste it into a bug report')
    p.add_argument('--json', action='store_true', help='print the same as JSON')
    p.set_defaults(func=_cmd_env)


SUBCOMMANDS = (
    _add_list_parser, _add_predict_parser, _add_bench_parser, _add_export_parser, _add_convert_parser,
    _add_convert_caffe_parser, _add_attention_parser, _add_train_parser, _add_serve_parser,
    _add_env_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='timm-sknet', description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='output/main_job',
                        help='folder for the main job\'s CSVs and plot (default: output/main_job)')
    parser.set_defaults(func=_cmd_main_job)
    sub = parser.add_subparsers(title='commands')
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split()) or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with command_line_context():  # remedies name flags, not Python keywords (timm_sknet.errors.remedy)
            return args.func(args)
    except (CLIError, *USER_ERRORS) as e:
        print(f'{parser.prog}: error: {_one_line(e)}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
