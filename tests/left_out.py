"""Optional extras a test run leaves out on purpose, named in ``TIMM_SKNET_TESTS_WITHOUT`` (comma-separated).

CI's minimum-versions job (scripts/test_min_versions.sh) sets ``TIMM_SKNET_TESTS_WITHOUT=transformers``: transformers
needs a newer safetensors than the package's minimum, so it cannot be imported there. Everywhere else every
extra of the test extra is installed and its tests must run, so tests import them plainly (no importorskip that
would turn a broken install into silent skips).
"""
import os

LEFT_OUT = frozenset(filter(None, os.environ.get('TIMM_SKNET_TESTS_WITHOUT', '').replace(' ', '').split(',')))


def uses_left_out_module(code: str) -> bool:
    """Whether Python source ``code`` imports a left-out top-level module."""
    return any(f'import {m}' in code or f'from {m} ' in code or f'from {m}.' in code for m in LEFT_OUT)
