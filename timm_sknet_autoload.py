"""Registers the sknet models in timm in every interpreter, with no ``import timm_sknet``.

timm has no plugin discovery, so timm-sknet provides its own. ``pip install`` puts ``timm_sknet_autoload.pth``
into site-packages; Python runs its one line at interpreter start, and that line calls :func:`install`. It
adds :class:`TimmImportWatcher` to ``sys.meta_path``, a finder that answers for nothing but ``timm``: when a
program imports timm, timm's own loader runs as usual, and once timm's ``__init__`` has finished the watcher
imports ``timm_sknet`` (which registers the models) and removes itself. A program that never imports timm
never loads torch or the package: the start-up cost is this small module (docs/getting-started.md).

Why a meta-path finder rather than patching timm: it needs no timm internals, works for ``import timm``,
``import timm.models`` and ``from timm import create_model`` alike, and leaves timm's module exactly as its
loader made it (the wrapper puts timm's loader back on the module once it has run).

It never breaks an interpreter: a failure (the package removed but this file left, a broken install, an
incompatible timm) becomes one :class:`AutoloadWarning` naming ``TIMM_SKNET_AUTOLOAD``, and the import of
timm goes on. ``TIMM_SKNET_AUTOLOAD=0`` (or ``false`` / ``no`` / ``off``) turns it off; the variable is read
at interpreter start and again when timm is imported. ``import timm_sknet`` keeps working either way.
"""
import os
import sys

__all__ = ['AutoloadWarning', 'ENV_VAR', 'TimmImportWatcher', 'enabled', 'install', 'register', 'uninstall']

ENV_VAR = 'TIMM_SKNET_AUTOLOAD'
_OFF_VALUES = ('0', 'false', 'no', 'off')
_WATCHED = 'timm'
_PLUGIN = 'timm_sknet'


class AutoloadWarning(RuntimeWarning):
    """The sknet models could not be registered automatically; timm itself works."""


def enabled() -> bool:
    """False when ``TIMM_SKNET_AUTOLOAD`` says off (0, false, no, off; any case)."""
    return os.environ.get(ENV_VAR, '1').strip().lower() not in _OFF_VALUES


def _warn(error: BaseException) -> None:
    message = (f'timm-sknet could not register the sknet models in timm ({type(error).__name__}: {error}); '
               f'timm works without them. Reinstall timm-sknet, or set {ENV_VAR}=0 to turn this autoload off.')
    try:
        import warnings
        warnings.warn(message, AutoloadWarning, stacklevel=3)
    except Exception:  # noqa: BLE001  (-W error must not turn our warning into a failed `import timm`)
        print(f'AutoloadWarning: {message}', file=sys.stderr)


def register() -> None:
    """Import ``timm_sknet`` (registering its models) unless turned off or already imported or importing."""
    if not enabled() or _PLUGIN in sys.modules:  # `import timm_sknet` first: it registers the models itself
        return
    try:
        __import__(_PLUGIN)
    except Exception as error:  # noqa: BLE001  (any failure: one warning, never a failed import of timm)
        _warn(error)


class _RegisterAfterTimm:
    """Wraps timm's own loader: runs it unchanged, then registers the models."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)  # timm's own import; its errors are timm's and pass through
        module.__loader__ = module.__spec__.loader = self._loader
        uninstall()
        register()

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...: timm's loader answers
        return getattr(self._loader, name)


class TimmImportWatcher:
    """A ``sys.meta_path`` finder for ``timm`` only: the spec the other finders give, with a wrapped loader."""

    timm_sknet_autoload = True  # how install() recognises one, even from a reloaded copy of this module

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _WATCHED:
            return None
        try:
            spec = self._spec_from_other_finders(fullname, path, target)
            if spec is not None and hasattr(spec.loader, 'exec_module'):
                spec.loader = _RegisterAfterTimm(spec.loader)
            return spec
        except Exception as error:  # noqa: BLE001
            uninstall()
            _warn(error)
            return None  # Python's own finders look for timm as if we were not there

    def _spec_from_other_finders(self, fullname, path, target):
        for finder in list(sys.meta_path):
            if getattr(finder, 'timm_sknet_autoload', False) or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


def uninstall() -> None:
    """Remove every watcher from ``sys.meta_path``."""
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, 'timm_sknet_autoload', False)]


def install() -> None:
    """Called by the .pth line at start-up: watch for timm (once), or register now if timm is already loaded."""
    try:
        if not enabled():
            return
        if _WATCHED in sys.modules:
            register()
        elif not any(getattr(f, 'timm_sknet_autoload', False) for f in sys.meta_path):
            sys.meta_path.insert(0, TimmImportWatcher())
    except Exception as error:  # noqa: BLE001
        _warn(error)
