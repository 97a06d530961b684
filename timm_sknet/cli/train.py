"""``timm-sknet train``: train or fine-tune an sknet (:mod:`timm_sknet.training`)."""
import argparse

from .arguments import CLIError, SubParsers


def run(args: argparse.Namespace) -> int:
    """One process of a run; under torchrun (``torchrun ... -m timm_sknet train ...``) each process runs this."""
    import torch.distributed as dist

    from ..training.job import run_train
    try:
        run_train(args)
    except ValueError as e:  # bad options or data (run_train's documented user errors)
        raise CLIError(str(e)) from e
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..training.arguments import add_train_arguments
    p = sub.add_parser('train', help='train or fine-tune an sknet (ImageFolder or synthetic shapes; torchrun for DDP)')
    add_train_arguments(p)
    p.set_defaults(func=run)
