"""Metadata lives in pyproject.toml; this file only ships ``timm_sknet_autoload.pth`` (see timm_sknet_autoload.py).

A ``.pth`` file must sit at the top of site-packages, which no pyproject setting can express, so ``build_py``
copies it to the root of the build (the wheel's root, recorded in its RECORD, so ``pip uninstall`` removes it).
An editable install builds no package files; there the copy goes to the root of the editable wheel instead.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

AUTOLOAD_PTH = 'timm_sknet_autoload.pth'


class build_py_with_autoload(build_py):
    """setuptools' build_py, plus the autoload .pth at the root of what is installed."""

    def run(self) -> None:
        super().run()
        # editable_wheel points `install_lib` at the unpacked editable wheel, whose root becomes site-packages
        root = self.get_finalized_command('install').install_lib if self.editable_mode else self.build_lib
        self.copy_file(str(Path(__file__).parent / AUTOLOAD_PTH), str(Path(root) / AUTOLOAD_PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / AUTOLOAD_PTH)]


setup(cmdclass={'build_py': build_py_with_autoload})
