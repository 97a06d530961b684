"""``timm-sknet predict``: top-k classes of many images, printed or written to CSV / JSONL."""
import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .arguments import (
    DEFAULT_WORKERS,
    CLIError,
    SubParsers,
    add_device_arg,
    add_model_args,
    add_runtime_args,
    calibration_images,
    checked_device,
    data_config,
    load_model,
    say_what_runs,
    warn_random,
)
from .weights import use_published_weights, weights_identity

if TYPE_CHECKING:
    from torch import nn

    from ..batch.predictor import BatchPredictor


def run(args: argparse.Namespace) -> int:
    from ..batch.finding import find_images
    from ..batch.output import PredictionFiles, Printer, check_paths
    from ..batch.predictor import BatchPredictor
    from ..batch.run import run_bulk
    from ..inference import BackendUnavailable, OptimizationError

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
    device = checked_device(args)
    args.pretrained = use_published_weights(args)
    model = load_model(args.model, args.pretrained, args.checkpoint)
    warn_random(args)
    try:
        calibration = calibration_images(model, args, data_config(model, args.img_size)['input_size'])
        predictor = BatchPredictor(model, backend=args.backend, precision=args.precision, img_size=args.img_size,
                                   topk=args.topk, embeddings=embeddings is not None, calibration=calibration,
                                   full_decode=args.full_decode, device=device)
        say_what_runs(predictor.model)
        if output:
            _start_manifest(args, model, predictor, output, embeddings)
        sink = (PredictionFiles(output, predictor.columns, embeddings, predictor.embedding_size) if output
                else Printer(predictor.topk))
    except (ValueError, BackendUnavailable, OptimizationError) as e:
        raise CLIError(str(e)) from None
    _, failed = run_bulk(predictor, paths, sink, batch_size=args.batch_size, workers=args.workers)
    return 1 if failed else 0


def _start_manifest(args: argparse.Namespace, model: 'nn.Module', predictor: 'BatchPredictor', output: Path,
                    embeddings: Optional[Path]) -> None:
    """The run's manifest beside ``output``, checked against the earlier run's on ``--resume``."""
    from ..batch.manifest import run_manifest, start_manifest
    manifest = run_manifest(args.model, weights_identity(model, args, args.pretrained),
                            predictor.data_config['input_size'], predictor.topk, embeddings, predictor.labels,
                            predictor.wnids)
    start_manifest(output, manifest, args.resume)


def add_parser(sub: SubParsers) -> None:
    from ..batch.finding import IMAGE_EXTENSIONS
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
    add_model_args(p, published_by_default=True)
    p.add_argument('--topk', type=int, default=5, help='classes per image (default: 5)')
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--batch-size', type=int, default=8, help='images per forward pass (default: 8)')
    p.add_argument('--workers', type=int, default=DEFAULT_WORKERS,
                   help='DataLoader processes decoding images, min(4, CPUs) by default; the model runs in the main '
                        'process; 0 decodes in the main process')
    p.add_argument('--output', metavar='FILE', default=None,
                   help='write rows to FILE (.csv or .jsonl): path, then index_i, wnid_i, label_i, probability_i of '
                        'the top k; FILE.manifest.json beside it says which run wrote it')
    p.add_argument('--embeddings', metavar='FILE', default=None,
                   help="also write each image's pre_logits to FILE (.npy or .safetensors), row i = output row i")
    p.add_argument('--full-decode', action='store_true',
                   help='decode JPEGs in full; without it they are decoded at the smallest DCT scale still at least '
                        'the size the transform resizes to, several times faster')
    p.add_argument('--resume', action='store_true',
                   help='continue an interrupted run of the same command (any other model, weights, --img-size, '
                        '--topk or --embeddings is refused): only images without a row or error yet')
    add_runtime_args(p, default_backend='eager')
    add_device_arg(p)
    p.set_defaults(func=run)
