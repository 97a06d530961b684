"""``timm-sknet serve``: the HTTP service of :mod:`timm_sknet.serving`, with uvicorn."""
import argparse
import json
import os
from typing import TYPE_CHECKING, Any, Dict

import torch

from ..data.labels import class_names
from .arguments import (
    CLIError,
    SubParsers,
    add_model_args,
    add_runtime_args,
    data_config,
    load_model,
    optimized,
    warn_random,
)
from .weights import use_published_weights

if TYPE_CHECKING:
    from fastapi import FastAPI


def _serve_app(options: Dict[str, Any]) -> 'FastAPI':
    """The app ``timm-sknet serve`` runs, from its parsed options: the model loaded, optimized, then served."""
    from timm.data import create_transform

    from ..serving.app import create_app
    args = argparse.Namespace(**options)
    torch.set_num_threads(args.threads)  # before optimize: onnxruntime and OpenVINO take their thread count from it
    args.pretrained = use_published_weights(args)
    model = load_model(args.model, args.pretrained, args.checkpoint)
    warn_random(args)
    config = data_config(model, args.img_size)
    labels = class_names(model)
    return create_app(optimized(model, args, config['input_size']), transform=create_transform(**config),
                      labels=labels, topk=args.topk, concurrency=args.concurrency,
                      max_upload_bytes=args.max_upload_mb * 2 ** 20, max_pixels=args.max_pixels)


def serve_app_from_environment() -> 'FastAPI':
    """uvicorn's app factory in each ``serve --workers N`` process: the options the command put in the environment."""
    from ..serving.server import ENV_OPTIONS
    return _serve_app(json.loads(os.environ[ENV_OPTIONS]))


def run(args: argparse.Namespace) -> int:
    from ..serving import server
    if server.missing_packages():
        raise CLIError(f'serve needs {", ".join(server.missing_packages())}: pip install "timm-sknet[serve]"')
    for flag in ('workers', 'concurrency', 'topk', 'max_upload_mb', 'max_pixels'):
        if getattr(args, flag) < 1:
            raise CLIError(f'--{flag.replace("_", "-")} must be >= 1, got {getattr(args, flag)}')
    # the cores this process may use, shared by every model call at once (torch threads back every backend)
    args.threads = args.threads or max(1, torch.get_num_threads() // (args.workers * args.concurrency))
    options = {k: v for k, v in vars(args).items() if k != 'func'}
    app: 'FastAPI | str' = _serve_app(options)  # here too with --workers: a bad option fails before the port opens
    if args.workers > 1:  # each worker builds its own model (an optimized model is not shared across processes)
        del app
        os.environ[server.ENV_OPTIONS] = json.dumps(options)
        app = f'{__name__}:serve_app_from_environment'
    server.run(app, host=args.host, port=args.port, workers=args.workers)
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..serving.app import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES
    p = sub.add_parser('serve', help='an HTTP service: POST an image to /predict, get its top-5 classes as JSON '
                                     '(docs/serving.md)')
    add_model_args(p, published_by_default=True)
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--topk', type=int, default=5, help='classes per answer (default: 5)')
    add_runtime_args(p, default_backend='auto')
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
    p.set_defaults(func=run)
