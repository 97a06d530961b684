"""``timm-sknet serve``: the HTTP service of :mod:`timm_sknet.serving`, with uvicorn (or gunicorn: ``app_factory``)."""
import argparse
import importlib.util
import json
import os
from typing import TYPE_CHECKING, Any, Dict

import torch

from ..data.labels import class_names
from .arguments import (
    CLIError,
    SubParsers,
    add_device_arg,
    add_model_args,
    add_runtime_args,
    check_model_name,
    checked_device,
    data_config,
    load_model,
    optimized,
    warn_random,
)
from .weights import use_published_weights

if TYPE_CHECKING:
    from fastapi import FastAPI

#: the options that go to uvicorn as they are
UVICORN_OPTIONS = ('proxy_headers', 'forwarded_allow_ips', 'timeout_keep_alive', 'backlog', 'log_level', 'access_log')


def _serve_app(options: Dict[str, Any]) -> 'FastAPI':
    """The app ``timm-sknet serve`` runs, from its parsed options: the model loaded, optimized, then served."""
    from timm.data import create_transform

    from ..data.images import decode_size
    from ..inference import resolve_device
    from ..serving.app import create_app
    args = argparse.Namespace(**options)
    torch.set_num_threads(args.threads)  # before optimize: onnxruntime and OpenVINO take their thread count from it
    args.pretrained = use_published_weights(args)
    device = resolve_device(getattr(args, 'device', 'auto'))  # also for the gunicorn factory, which has no run()
    model = load_model(args.model, args.pretrained, args.checkpoint).to(device)
    warn_random(args)
    config = data_config(model, args.img_size)
    fast = optimized(model, args, config['input_size'])
    # /embed runs the plain model (an optimized one gives logits only); fp32 eager, the model's weights once more
    return create_app(fast, transform=create_transform(**config), labels=class_names(model), topk=args.topk,
                      concurrency=args.concurrency, max_queue=args.max_queue, embedder=model,
                      max_upload_bytes=args.max_upload_mb * 2 ** 20, max_pixels=args.max_pixels,
                      decode_size=decode_size(config), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)


def serve_app_from_environment() -> 'FastAPI':
    """uvicorn's app factory in each ``serve --workers N`` process: the options the command put in the environment."""
    from ..serving.server import ENV_OPTIONS
    return _serve_app(json.loads(os.environ[ENV_OPTIONS]))


def app_factory(*arguments: str) -> 'FastAPI':
    """The app of ``timm-sknet serve ARGUMENTS``, for another server, e.g. gunicorn (docs/serving.md):
    ``gunicorn -k uvicorn_worker.UvicornWorker 'timm_sknet.cli.serve:app_factory("--model", "sknet50")'``."""
    from . import build_parser
    args = build_parser().parse_args(['serve', *arguments])
    _check(args)
    return _serve_app(_options(args))


def _check(args: argparse.Namespace) -> None:
    """Every option that can be checked without building the model: counts, model name, checkpoint, backend."""
    from ..inference import BackendUnavailable, check_backend_precision
    from ..serving import server
    if server.missing_packages():
        raise CLIError(f'serve needs {", ".join(server.missing_packages())}: pip install "timm-sknet[serve]"')
    for flag in ('workers', 'concurrency', 'topk', 'max_upload_mb', 'max_pixels', 'worker_timeout',
                 'graceful_timeout', 'max_batch'):
        if getattr(args, flag) < 1:
            raise CLIError(f'--{flag.replace("_", "-")} must be >= 1, got {getattr(args, flag)}')
    for flag in ('max_queue', 'max_wait_ms'):
        if getattr(args, flag) < 0:
            raise CLIError(f'--{flag.replace("_", "-")} must be >= 0, got {getattr(args, flag)}')
    check_model_name(args.model)
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint} (check the path)')
    try:
        check_backend_precision(args.backend, args.precision)
    except BackendUnavailable as e:
        raise CLIError(str(e)) from None
    if args.backend in ('onnxruntime', 'openvino') and importlib.util.find_spec(args.backend) is None:
        raise CLIError(f'--backend {args.backend} is not installed: pip install "timm-sknet[{args.backend}]"')


def _options(args: argparse.Namespace) -> Dict[str, Any]:
    # the cores this process may use, shared by every model call at once (torch threads back every backend)
    args.threads = args.threads or max(1, torch.get_num_threads() // (args.workers * args.concurrency))
    return {k: v for k, v in vars(args).items() if k != 'func'}


def run(args: argparse.Namespace) -> int:
    from ..serving import server
    _check(args)
    args.device = checked_device(args)  # a missing GPU is refused here, before any worker starts
    try:
        server.check_port(args.host, args.port)  # before any model is built
    except OSError as e:
        raise CLIError(str(e)) from None
    options = _options(args)
    uvicorn_options = {k: options[k] for k in UVICORN_OPTIONS}
    app: 'FastAPI | str'
    if args.workers == 1:
        app = _serve_app(options)  # a bad checkpoint or weights fail here, before the port opens
    else:  # each worker builds its own model (an optimized model is not shared across processes); this one none
        os.environ[server.ENV_OPTIONS] = json.dumps(options)
        app = f'{__name__}:serve_app_from_environment'
    server.run(app, host=args.host, port=args.port, workers=args.workers, worker_timeout=args.worker_timeout,
               graceful_timeout=args.graceful_timeout, **uvicorn_options)
    return 0


def _add_server_args(p: argparse.ArgumentParser) -> None:
    from ..serving.server import DEFAULT_GRACEFUL_TIMEOUT, DEFAULT_WORKER_TIMEOUT
    p.add_argument('--worker-timeout', type=int, default=DEFAULT_WORKER_TIMEOUT, metavar='S',
                   help='seconds a worker may leave its supervisor unanswered, model build and warm-up included, '
                        'before it is replaced (default: %(default)s)')
    p.add_argument('--graceful-timeout', type=int, default=DEFAULT_GRACEFUL_TIMEOUT, metavar='S',
                   help='after SIGTERM, seconds in-flight requests get to finish (default: %(default)s)')
    p.add_argument('--proxy-headers', action=argparse.BooleanOptionalAction, default=True,
                   help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (uvicorn's; default: on)")
    p.add_argument('--forwarded-allow-ips', default=None, metavar='IPS',
                   help="comma-separated proxy addresses to trust, '*' for all (default: $FORWARDED_ALLOW_IPS or "
                        '127.0.0.1)')
    p.add_argument('--timeout-keep-alive', type=int, default=5, metavar='S',
                   help='close an idle kept-alive connection after S seconds; set it above the load balancer\'s '
                        'idle timeout (default: %(default)s)')
    p.add_argument('--backlog', type=int, default=2048, help='connections the kernel queues (default: %(default)s)')
    p.add_argument('--log-level', default='info', choices=('critical', 'error', 'warning', 'info', 'debug', 'trace'),
                   help='uvicorn log level (default: %(default)s)')
    p.add_argument('--access-log', action=argparse.BooleanOptionalAction, default=True,
                   help='one log line per request (default: on)')


def add_parser(sub: SubParsers) -> None:
    from ..serving.app import (
        DEFAULT_MAX_BATCH,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_QUEUE,
        DEFAULT_MAX_UPLOAD_BYTES,
        DEFAULT_MAX_WAIT_MS,
    )
    p = sub.add_parser('serve', help='an HTTP service: POST an image to /predict, get its top-5 classes as JSON '
                                     '(docs/serving.md)')
    add_model_args(p, published_by_default=True)
    p.add_argument('--img-size', type=int, default=None, help="input size (default: the model's pretrained_cfg)")
    p.add_argument('--topk', type=int, default=5, help='classes per answer without ?topk= (default: 5)')
    add_runtime_args(p, default_backend='auto')
    add_device_arg(p)
    p.add_argument('--host', default='127.0.0.1', help='address to listen on: the default answers this machine only, '
                                                       '0.0.0.0 every interface')
    p.add_argument('--port', type=int, default=8000, help='default: 8000; 0 picks a free one (printed)')
    p.add_argument('--workers', type=int, default=1, help='server processes, each with its own model (default: 1)')
    p.add_argument('--concurrency', type=int, default=1, help='model calls at once per process (default: 1)')
    p.add_argument('--max-queue', type=int, default=DEFAULT_MAX_QUEUE,
                   help='requests per process that may wait for a model call; past them 503 (default: %(default)s)')
    p.add_argument('--max-batch', type=int, default=DEFAULT_MAX_BATCH, metavar='N',
                   help='run the images of up to N waiting requests as one batch, 1: each alone; the default was '
                        'chosen by the measurement in docs/serving.md (default: %(default)s)')
    p.add_argument('--max-wait-ms', type=float, default=DEFAULT_MAX_WAIT_MS, metavar='MS',
                   help='with --max-batch > 1, the longest a request waits for others to join its batch '
                        '(default: %(default)s)')
    p.add_argument('--threads', type=int, default=None,
                   help="runtime threads of each model call (default: the machine's cores / (workers x concurrency))")
    p.add_argument('--max-upload-mb', type=int, default=DEFAULT_MAX_UPLOAD_BYTES // 2 ** 20,
                   help='largest upload in MiB (default: %(default)s)')
    p.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS,
                   help='most pixels an image may have, checked before decoding (default: %(default)s)')
    _add_server_args(p)
    p.set_defaults(func=run)
