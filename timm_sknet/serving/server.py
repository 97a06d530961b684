"""Running the service: uvicorn in this process, or in worker processes that each build their own model."""
from typing import TYPE_CHECKING, List, Union

if TYPE_CHECKING:
    import fastapi

__all__ = ['ENV_OPTIONS', 'missing_packages', 'run']

#: where ``timm-sknet serve --workers N`` hands its options to each worker process
ENV_OPTIONS = 'TIMM_SKNET_SERVE_OPTIONS'


def missing_packages() -> List[str]:
    """The packages of the ``serve`` extra that are not installed."""
    import importlib.util
    return [name for name, module in (('fastapi', 'fastapi'), ('uvicorn', 'uvicorn'),
                                      ('python-multipart', 'python_multipart'))
            if importlib.util.find_spec(module) is None]


def run(app: Union['fastapi.FastAPI', str], host: str = '127.0.0.1', port: int = 8000, workers: int = 1) -> None:
    """Serve ``app`` with uvicorn until interrupted; ``workers`` > 1 needs ``app`` as an import string of a factory
    (``'module:function'``), which each worker process calls to build its own model."""
    import uvicorn
    uvicorn.run(app, host=host, port=port, workers=workers, factory=isinstance(app, str), log_level='info',
                timeout_graceful_shutdown=10)
