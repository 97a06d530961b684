"""The weights path against the Hub's real protocol (tests/local_hub.py): the 302 to a CDN on another host, the
X-Linked-* headers, signed URLs that expire, 401 for gated and private repos, and faults on either side, all driven
by huggingface_hub's own client. Each fault gives one WeightsError naming model, repo, cause and remedy, leaves
nothing in the cache that a later load would trust, and the next load after the fault clears succeeds with one
download. (Xet transfers: tests/test_hub_xet.py.)
"""
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, assert_served_weights, load_small_sknet18
from huggingface_hub import constants as hf_constants
from local_hub import git_blob_sha1, lfs_pointer

import timm

from timm_sknet import WeightsError

LABEL = 'sknet18.ra_in1k'
WEIGHTS = 'model.safetensors'


def _serve(hub, weights, repo=SKNET18_REPO):
    return hub.add_commit(repo, {WEIGHTS: weights.data, 'config.json': b'{"architecture": "sknet18"}'})


def _cache_files(cache: Path):
    """Every file of the cache but locks and refs: blobs, snapshot links, temporary files of downloads."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob('*')
                  if (p.is_file() or p.is_symlink()) and '.locks' not in p.parts and 'refs' not in p.parts
                  and p.name != 'CACHEDIR.TAG')


# ---- the protocol --------------------------------------------------------------------------------------------
def test_weights_come_from_the_cdn_and_the_blob_is_named_by_x_linked_etag(local_hub, hf_cache, sknet18_small):
    """The sha256 is only in X-Linked-Etag: a client that read ETag (the LFS pointer's id) would fail here."""
    _serve(local_hub, sknet18_small)
    digest = hashlib.sha256(sknet18_small.data).hexdigest()
    pointer_etag = git_blob_sha1(lfs_pointer(sknet18_small.data))
    assert pointer_etag != digest and len(pointer_etag) == 40  # the two headers really differ

    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert local_hub.count('HEAD', WEIGHTS, server='hub') == 2  # ours without retries, then huggingface_hub's
    assert local_hub.count('GET', WEIGHTS, server='hub') == 0  # the Hub only redirects
    assert local_hub.count('GET', WEIGHTS, server='cdn') == 1
    blobs = [f for f in _cache_files(hf_cache) if '/blobs/' in f]
    assert blobs == [f'models--timm--skresnet18.ra_in1k/blobs/{digest}']
    assert not any(pointer_etag in f for f in _cache_files(hf_cache))


def test_the_token_goes_to_the_hub_and_never_to_the_cdn(local_hub, monkeypatch, sknet18_small):
    _serve(local_hub, sknet18_small)
    local_hub.fault = 'gated'
    monkeypatch.setattr(hf_constants, 'HF_HUB_DISABLE_IMPLICIT_TOKEN', False)
    monkeypatch.setenv('HF_TOKEN', local_hub.token)
    assert_served_weights(load_small_sknet18(), sknet18_small)
    hub_auth = [r.headers.get('authorization') for r in local_hub.log if r.server == 'hub']
    cdn_headers = [r.headers for r in local_hub.log if r.server == 'cdn']
    assert hub_auth == [f'Bearer {local_hub.token}'] * 2
    assert cdn_headers and not any('authorization' in h for h in cdn_headers)


def _git_hash_object(data: bytes) -> str:
    """What git itself calls ``data`` (``git hash-object``), else git's definition of a blob id."""
    if shutil.which('git') is None:
        return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
    return subprocess.run(['git', 'hash-object', '--stdin'], input=data, capture_output=True,
                          check=True).stdout.decode().strip()


def test_a_weights_file_stored_in_git_is_checked_against_its_git_blob_sha1(local_hub, hf_cache):
    """Not every repo sends *.safetensors to LFS: the Hub then serves the file itself, its ETag the git blob sha1
    (no sha256 anywhere). The download, and every later load from the cache, is checked against that id."""
    from safetensors.torch import save as safetensors_bytes

    from timm_sknet.hub import fetch_verified_weights

    data = safetensors_bytes({'weight': torch.arange(64, dtype=torch.float32)})
    local_hub.add_commit('me/small', {WEIGHTS: data})
    local_hub.in_git.add(WEIGHTS)
    path = fetch_verified_weights('me/small')
    assert path.read_bytes() == data
    assert local_hub.count('GET', WEIGHTS, server='hub') == 1 and local_hub.count('GET', server='cdn') == 0
    blob = Path(os.path.realpath(path))
    assert blob.name == git_blob_sha1(data) == _git_hash_object(data)  # the blob is named by git's id

    corrupted = bytearray(data)
    corrupted[-1] ^= 1  # same size: only the digest can tell
    blob.write_bytes(bytes(corrupted))
    with pytest.raises(WeightsError, match='integrity check failed: the git-sha1 of the cached file'):
        fetch_verified_weights('me/small')
    assert not blob.exists() and not path.is_symlink()  # evicted, not trusted later
    assert fetch_verified_weights('me/small').read_bytes() == data  # and downloaded afresh
    assert local_hub.count('GET', WEIGHTS, server='hub') == 2


# ---- faults, each side ---------------------------------------------------------------------------------------
FAULT_MESSAGES = {  # fault -> what the WeightsError must say, and the remedy it must give
    '500': ('HTTP 500', 'Retry'),
    'size': ('wrong size', 'Retry'),
    'gated': ('gated', 'hf auth login'),
    'private': ('is private', 'hf auth login'),
    'reset': ('connection broke', 'Retry'),
    'truncate': ('connection broke', 'Retry'),
    'corrupt': ('integrity check failed: the sha256 of the downloaded file', 'Load again'),  # before caching
    'expired': ('refused the download URL (HTTP 403)', 'clock'),
}


@pytest.mark.parametrize('fault', sorted(FAULT_MESSAGES))
def test_fault_gives_one_weights_error_nothing_cached_then_next_load_succeeds(fault, local_hub, hf_cache,
                                                                              sknet18_small):
    _serve(local_hub, sknet18_small)
    local_hub.fault = fault
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18()
    elapsed = time.perf_counter() - start
    err = info.value
    assert type(err) is WeightsError and isinstance(err, OSError)
    cause, remedy = FAULT_MESSAGES[fault]
    for part in (LABEL, SKNET18_REPO, cause, remedy):
        assert part in str(err), str(err)
    assert '\n' not in str(err)
    assert elapsed < 10, elapsed  # no minute of retries (truncate: huggingface_hub resumes 5 times, 1 s apart)
    assert _cache_files(hf_cache) == []  # no blob, no link, no partial file

    local_hub.fault = None
    local_hub.reset_counts()
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert local_hub.count('GET', WEIGHTS, server='cdn') == 1


def test_a_stalled_cdn_fails_in_proportion_to_the_read_timeout_and_leaves_nothing(local_hub, hf_cache, monkeypatch,
                                                                                 sknet18_small):
    """huggingface_hub's read timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default) decides when a stall fails: six
    silent reads and five 1 s pauses (measured with the default: about 65 s; documented in docs/weights.md)."""
    _serve(local_hub, sknet18_small)
    local_hub.fault = 'stall'
    monkeypatch.setattr(hf_constants, 'HF_HUB_DOWNLOAD_TIMEOUT', 0.5)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18()
    elapsed = time.perf_counter() - start
    assert 3 <= elapsed < 15, elapsed  # 6 x 0.5 s + 5 x 1 s: the default 10 s gives 65 s, under the 90 s promised
    msg = str(info.value)
    for part in (LABEL, SKNET18_REPO, 'stalled', 'no data arrived for 0.5 s', 'HF_HUB_DOWNLOAD_TIMEOUT=<seconds>'):
        assert part in msg, msg
    assert _cache_files(hf_cache) == []
    local_hub.fault = None
    assert_served_weights(load_small_sknet18(), sknet18_small)


def test_a_slow_transfer_that_keeps_delivering_outlives_the_read_timeout(local_hub, monkeypatch, sknet18_small):
    """The limit is on silence, not on the download: 10 pieces 0.3 s apart under a 1 s read timeout."""
    _serve(local_hub, sknet18_small)
    local_hub.fault = 'slow'
    monkeypatch.setattr(hf_constants, 'HF_HUB_DOWNLOAD_TIMEOUT', 1)
    start = time.perf_counter()
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert time.perf_counter() - start >= 2.5  # well past the limit, yet never 1 s without data
    assert local_hub.count('GET', WEIGHTS, server='cdn') == 1


def test_a_cdn_that_ignores_range_never_yields_a_spliced_file(local_hub, hf_cache, sknet18_small):
    """The first request closes at the middle; the resume is answered with 200 and the whole body, as some proxies
    do. huggingface_hub 2.x resumes and restarts from byte 0; 1.18 gives up at once. Either way no load returns, and
    no cache keeps, half a file followed by the whole one."""
    _serve(local_hub, sknet18_small)
    local_hub.fault = 'ignore-range'
    try:
        model = load_small_sknet18()
    except WeightsError as err:
        assert 'connection broke' in str(err) and _cache_files(hf_cache) == []
    else:
        assert_served_weights(model, sknet18_small)
        assert local_hub.count('GET', WEIGHTS, server='cdn') == 2


# ---- hf-hub: names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case, what', [
    ('missing', 'does not exist'), ('gated', 'is gated'), ('offline', 'not in the local cache'),
])
def test_hf_hub_config_failures_speak_weights_error_inside_hub_model_errors(case, what, local_hub, monkeypatch):
    from timm_sknet.hub import hub_model_errors

    name = 'hf-hub:me/sknet18-mine'
    if case != 'missing':
        local_hub.add_commit('me/sknet18-mine', {'config.json': b'{}'})
    local_hub.fault = 'gated' if case == 'gated' else None
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', case == 'offline')
    with pytest.raises(WeightsError) as info, hub_model_errors(name):
        timm.create_model(name, pretrained=True)
    msg = str(info.value)
    assert all(part in msg for part in (name, "'me/sknet18-mine'", 'config.json', what)), msg


def test_hf_hub_config_failures_outside_the_block_are_timms_own(local_hub):
    """timm fetches config.json before it knows the architecture; timm_sknet does not patch that for all models."""
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError) as info:
        timm.create_model('hf-hub:me/missing', pretrained=True)
    assert not isinstance(info.value, WeightsError) and isinstance(info.value, OSError)


def test_hf_hub_sknet_weights_failures_are_weights_errors_without_any_block(local_hub, hf_cache, sknet18_small):
    """Once config.json names an sknet, the weights come through timm_sknet: CDN faults are WeightsError."""
    config = b'{"architecture": "sknet18", "pretrained_cfg": {}, "model_args": {"layers": [1, 1, 1, 1]}}'
    local_hub.add_commit('me/sknet18-mine', {'config.json': config, WEIGHTS: sknet18_small.data})
    local_hub.fault = 'truncate'
    with pytest.raises(WeightsError, match="'me/sknet18-mine'.*connection broke"):
        timm.create_model('hf-hub:me/sknet18-mine', pretrained=True)
    local_hub.fault = None
    assert_served_weights(timm.create_model('hf-hub:me/sknet18-mine', pretrained=True), sknet18_small)


def test_hf_hub_sknet_weights_are_asked_for_once(local_hub, hf_cache, sknet18_small):
    """timm is handed the verified file, not the Hub name: it must not ask the Hub for the weights again."""
    config = b'{"architecture": "sknet18", "pretrained_cfg": {}, "model_args": {"layers": [1, 1, 1, 1]}}'
    local_hub.add_commit('me/sknet18-mine', {'config.json': config, WEIGHTS: sknet18_small.data})
    assert_served_weights(timm.create_model('hf-hub:me/sknet18-mine', pretrained=True), sknet18_small)
    assert local_hub.count('HEAD', WEIGHTS) == 2, local_hub.requests  # one fetch: our probe + huggingface_hub's
    assert local_hub.count('GET', WEIGHTS) == 1, local_hub.requests


# ---- the command line ----------------------------------------------------------------------------------------
@pytest.fixture
def image(tmp_path):
    from PIL import Image
    path = tmp_path / 'gray.png'
    Image.new('RGB', (64, 64), (128, 128, 128)).save(path)
    return path


@pytest.mark.parametrize('model, fault, repo, what', [
    ('sknet18', 'expired', SKNET18_REPO, 'HTTP 403'),
    ('sknet18', '500', SKNET18_REPO, 'HTTP 500'),
    ('hf-hub:me/missing', None, 'me/missing', 'does not exist'),
])
def test_the_cli_prints_a_hub_failure_as_one_line_and_exits_2(model, fault, repo, what, local_hub, capsys, image,
                                                             sknet18_small):
    from timm_sknet.cli import main

    _serve(local_hub, sknet18_small)
    local_hub.fault = fault
    rc = main(['predict', str(image), '--model', model, '--pretrained'])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ''
    assert err.startswith('timm-sknet: error: Pretrained weights for ') and err.count('\n') == 1, err
    assert f"repo '{repo}'" in err and what in err and 'Traceback' not in err
