"""Xet transfers against the loopback Hub (tests/local_hub.py): with ``hub.xet`` the Hub announces Xet storage and
huggingface_hub hands the download to hf_xet, which asks the CAS on the CDN host how the file is stored
(``/cas/v1/reconstructions/<xet hash>``) and fetches the xorb ranges itself. hf_xet checks no hash of what it
receives, so the sha256 check of timm_sknet is what stands between a corrupted chunk and the weights.
"""
import hashlib
import re
import time
from pathlib import Path
from typing import List

import pytest
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, assert_served_weights, load_small_sknet18
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url

from timm_sknet import WeightsError

WEIGHTS = 'model.safetensors'
REPO_DIR = 'models--timm--skresnet18.ra_in1k'


def _serve_on_xet(hub, weights) -> str:
    hub.xet = True
    return hub.add_commit(SKNET18_REPO, {WEIGHTS: weights.data, 'config.json': b'{"architecture": "sknet18"}'})


def _cdn_paths(hub, prefix: str) -> List[str]:
    return [r.path for r in hub.log if r.server == 'cdn' and r.path.startswith(prefix)]


def _cache_files(cache: Path) -> List[str]:
    """Blobs and snapshot entries of the cache, the shared blob store's included (huggingface_hub 2.x keeps a Xet
    download once, in ``blobs/<xx>/<xet hash>`` at the top of the cache, and links ``<repo>/blobs/<sha256>`` to it);
    not refs, locks, CACHEDIR.TAG, partial downloads, nor the store's marker and ``.refs`` manifests (hints only)."""
    if not cache.exists():
        return []
    bookkeeping = ('CACHEDIR.TAG', '.huggingface-shared-blobs')
    return sorted(str(p.relative_to(cache)) for p in cache.rglob('*')
                  if (p.is_file() or p.is_symlink()) and '.locks' not in p.parts and 'refs' not in p.parts
                  and p.name not in bookkeeping and not p.name.endswith(('.incomplete', '.refs', '.lock')))


def test_a_xet_repo_loads_through_hf_xet_from_the_cas(local_hub, hf_cache, sknet18_small):
    """The bytes come from the CAS's xorbs, not the LFS route; the CAS gets the Xet token, the xorb store none."""
    _serve_on_xet(local_hub, sknet18_small)
    assert_served_weights(load_small_sknet18(), sknet18_small)

    xet_hash = get_hf_file_metadata(hf_hub_url(SKNET18_REPO, WEIGHTS)).xet_file_data.file_hash
    digest = hashlib.sha256(sknet18_small.data).hexdigest()
    assert re.fullmatch('[0-9a-f]{64}', xet_hash) and xet_hash != digest
    assert f'/cas/v1/reconstructions/{xet_hash}' in _cdn_paths(local_hub, '/cas/')
    xorbs = _cdn_paths(local_hub, '/xorbs/')
    assert len(xorbs) == len(set(xorbs)) >= 2  # the file spans several xorbs, each fetched once
    assert _cdn_paths(local_hub, '/lfs/') == []
    assert local_hub.count('GET', WEIGHTS, server='hub') == 0
    for r in local_hub.log:
        if r.server == 'cdn' and r.path.startswith('/cas/'):
            assert r.headers.get('authorization') == f'Bearer {local_hub.xet_access_token}'
        elif r.server == 'cdn' and r.path.startswith('/xorbs/'):
            assert 'authorization' not in r.headers  # signed URLs carry their own authority

    blobs = [f for f in _cache_files(hf_cache) if f.startswith(f'{REPO_DIR}/blobs/')]
    assert blobs == [f'{REPO_DIR}/blobs/{digest}']

    local_hub.reset_counts()
    assert_served_weights(load_small_sknet18(), sknet18_small)  # from the cache, checked again, not evicted
    assert _cdn_paths(local_hub, '/cas/') == [] and _cdn_paths(local_hub, '/xorbs/') == []


def test_a_corrupted_xet_transfer_fails_the_integrity_check_and_leaves_nothing(local_hub, hf_cache, sknet18_small):
    """hf_xet takes a chunk with one byte flipped (sizes and headers intact); timm_sknet's sha256 check must not."""
    _serve_on_xet(local_hub, sknet18_small)
    local_hub.fault = 'corrupt'
    with pytest.raises(WeightsError, match='integrity check failed') as info:
        load_small_sknet18()
    corrupted = bytearray(sknet18_small.data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    assert hashlib.sha256(corrupted).hexdigest() in str(info.value)  # the flipped byte came through hf_xet
    assert _cdn_paths(local_hub, '/xorbs/') and not _cdn_paths(local_hub, '/lfs/')
    assert _cache_files(hf_cache) == []

    local_hub.fault = None
    local_hub.reset_counts()
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert _cdn_paths(local_hub, '/xorbs/')  # downloaded afresh through Xet, not found in a cache


def test_with_xet_disabled_a_xet_repo_loads_over_the_lfs_route(local_hub, hf_cache, monkeypatch, sknet18_small):
    """HF_HUB_DISABLE_XET (what users set when Xet fails them) must leave a working path: the 302 to the CDN."""
    monkeypatch.setattr(hf_constants, 'HF_HUB_DISABLE_XET', True)
    _serve_on_xet(local_hub, sknet18_small)
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert len(_cdn_paths(local_hub, '/lfs/')) == 1
    assert _cdn_paths(local_hub, '/cas/') == [] and _cdn_paths(local_hub, '/xorbs/') == []
    assert not any('/xet-read-token/' in path for _, path in local_hub.requests)


def test_a_failing_xet_transfer_is_one_weights_error_that_names_the_way_around_it(local_hub, hf_cache, monkeypatch,
                                                                                 sknet18_small):
    """The CAS does not know the file (404): hf_xet's bare RuntimeError becomes one WeightsError, at once, with the
    remedy that avoids Xet; nothing is cached."""
    _serve_on_xet(local_hub, sknet18_small)
    monkeypatch.setattr(local_hub, 'xet_file', lambda file_hash: None)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18()
    assert time.perf_counter() - start < 5
    msg = str(info.value)
    for part in ('sknet18.ra_in1k', SKNET18_REPO, 'the Xet transfer failed', '404', 'HF_HUB_DISABLE_XET=1'):
        assert part in msg, msg
    assert _cdn_paths(local_hub, '/cas/v1/reconstructions/')
    assert _cache_files(hf_cache) == []
