"""Verified downloads of pretrained weights from the Hugging Face Hub.

timm fetches ``model.safetensors`` with ``huggingface_hub`` and loads whatever lands in the cache: neither checks
the file's sha256, so one same-size corrupted download poisons the cache. Transport failures surface as raw
``httpx2`` exceptions (not even ``OSError``), an unreachable Hub costs about 23 s of retries, and a CDN that
stalls mid-body about 66 s (measured against tests/local_hub.py with huggingface_hub 2.4.0).

This module asks the Hub once, without retries, where the file is (``HEAD /resolve``: for an LFS file a 302 to
a signed CDN URL, with the sha256 in ``X-Linked-Etag``, the size in ``X-Linked-Size`` and the commit in
``X-Repo-Commit``, read by huggingface_hub's ``get_hf_file_metadata``), then downloads the bytes itself over
plain HTTP (:mod:`.transfer`: resumes, a fresh URL when the signed one expired, a failure after
``TIMM_SKNET_STALL_TIMEOUT`` seconds without data), hashes them, and only then renames them into the
huggingface_hub cache (:mod:`.hf_cache`), under huggingface_hub's own per-blob lock, so several processes
loading the same model download it once. Every load, cached or not, hashes the file first (against a pin of
:mod:`.pins`, else the sha256 the Hub announced, which names the blob); a bad cache entry is evicted. Every
failure is a :class:`~timm_sknet.errors.WeightsError` naming model, repo, cause and remedy.

**Xet.** Repositories stored on Xet announce ``X-Xet-Hash`` and a token route, and huggingface_hub then hands
the transfer to ``hf_xet`` (Rust): its own retries and timeouts, errors as bare ``RuntimeError``, and the bytes
never pass through the CDN URL. This module ignores the Xet headers and takes the 302's URL, which on the Hub
serves Xet-stored files over plain HTTPS too (the Xet bridge), so the stall limit, the error mapping and the
verify-before-cache rule hold for every repo. The cost is Xet's chunk deduplication, which saves nothing for a
single 45-110 MB file downloaded once.
"""
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..errors import WeightsError
from ..file_io import git_blob_sha1, sha256_file
from .failures import Failure, describe
from .hf_cache import CachedFile
from .pins import PINS, Pin
from .transfer import TransferError, download

__all__ = ['DEFAULT_STALL_TIMEOUT_S', 'STALL_TIMEOUT_ENV', 'WEIGHTS_FILENAME', 'configured_stall_timeout',
           'fetch_verified_weights', 'pretrained_kwargs']

_logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = 'model.safetensors'
#: seconds without a byte after which a download fails (env ``TIMM_SKNET_STALL_TIMEOUT`` overrides it)
DEFAULT_STALL_TIMEOUT_S = 20.0
STALL_TIMEOUT_ENV = 'TIMM_SKNET_STALL_TIMEOUT'

_SHA256 = re.compile(r'[0-9a-f]{64}')
_GIT_SHA1 = re.compile(r'[0-9a-f]{40}')


def configured_stall_timeout() -> float:
    """``TIMM_SKNET_STALL_TIMEOUT`` (seconds, read at each download) or :data:`DEFAULT_STALL_TIMEOUT_S`."""
    raw = os.environ.get(STALL_TIMEOUT_ENV, '').strip()
    if not raw:
        return DEFAULT_STALL_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float('nan')
    if not value > 0:
        raise WeightsError(f'{STALL_TIMEOUT_ENV}={raw!r} is not a positive number of seconds: set it to e.g. '
                           f'{DEFAULT_STALL_TIMEOUT_S:g} (how long a download may go without data) or unset it.')
    return value


def _split_hub_id(hf_hub_id: str) -> Tuple[str, Optional[str]]:
    repo_id, _, revision = hf_hub_id.partition('@')
    if '@' in revision or not repo_id:
        raise WeightsError(f"Invalid hf_hub_id {hf_hub_id!r}: expected 'org/repo' or 'org/repo@<revision>'.")
    return repo_id, revision or None


def _is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set in the environment since."""
    from huggingface_hub import constants
    env = os.environ.get('HF_HUB_OFFLINE', '').strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in ('1', 'ON', 'YES', 'TRUE')


def _announced_digest(pointer: Path) -> Optional[Tuple[str, str]]:
    """``('sha256' | 'git-sha1', hex)`` the Hub announced for a cached file, read from its blob's name.

    The cache stores a download as ``blobs/<etag>`` and links ``snapshots/<commit>/<file>`` to it. An LFS file's
    ETag (``X-Linked-Etag``) is the sha256 of its content; a small (non-LFS) file's is its git blob sha1.
    """
    if not pointer.is_symlink():
        return None
    return _digest_kind(Path(os.path.realpath(pointer)).name)


def _digest_kind(etag: str) -> Optional[Tuple[str, str]]:
    if _SHA256.fullmatch(etag):
        return 'sha256', etag
    if _GIT_SHA1.fullmatch(etag):
        return 'git-sha1', etag
    return None


def _digest_of(path: Path, kind: str) -> str:
    return sha256_file(path) if kind == 'sha256' else git_blob_sha1(path)


def _verify(pointer: Path, pinned: Optional[str], fail: Failure) -> str:
    """Hash the cached file; on mismatch evict it and raise. Returns its sha256."""
    actual = sha256_file(pointer)
    announced = _announced_digest(pointer)
    if announced is not None:
        kind, expected = announced
        got = actual if kind == 'sha256' else git_blob_sha1(pointer)
        if got != expected:
            CachedFile.evict(pointer)
            raise fail(
                f'integrity check failed: the {kind} of the cached file is {got}, but the Hub announced '
                f'{expected}; the corrupted cache entry was removed',
                'Load again: the next load downloads a fresh copy. If it keeps failing, something alters the '
                'file on this machine (disk, another program); fetch it another way and pass it with '
                "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').")
    if pinned is not None and actual != pinned:
        if announced is None or announced[0] != 'sha256':
            CachedFile.evict(pointer)
        raise fail(
            f'integrity check failed: sha256 {actual} does not match the sha256 pinned in timm_sknet ({pinned})'
            + ('; the file is what the Hub serves, so the repository changed since it was pinned'
               if announced is not None else '; the cache entry was removed'),
            "Pin the verified revision as hf_hub_id='org/repo@<commit>' in the pretrained_cfg, or pass a "
            "trusted file with pretrained_cfg_overlay=dict(file=...).")
    if announced is None and pinned is None:
        _logger.warning(
            'Could not verify %s: no pinned sha256 and the Hub-announced digest is unknown '
            '(cache without symlinks). sha256=%s', pointer, actual)
    return actual


def _pin_for(repo_id: str, filename: str, revision: Optional[str]) -> Optional[Pin]:
    """The pin of this file, unless the caller asked for another revision than the pinned commit."""
    pin = PINS.get(f'{repo_id}/{filename}')
    return pin if pin is not None and revision in (None, pin.commit) else None


def fetch_verified_weights(
        hf_hub_id: str,
        filename: str = WEIGHTS_FILENAME,
        cache_dir: Optional[Union[str, Path]] = None,
        label: Optional[str] = None,
        stall_timeout: Optional[float] = None,
) -> Path:
    """Download (or find in the cache) one weights file of a Hub repo, verify its sha256, return its path.

    Args:
        hf_hub_id: ``'org/repo'`` or ``'org/repo@<revision>'`` (branch, tag or commit).
        filename: the file in the repo; only safetensors is fetched by this package.
        cache_dir: the Hugging Face cache to use (default: huggingface_hub's, i.e. ``HF_HUB_CACHE``).
        label: what is being loaded, for messages (e.g. ``'sknet50.ra_in1k'``).
        stall_timeout: seconds without data before the download fails (default: :func:`configured_stall_timeout`).

    Raises:
        WeightsError: for every failure (offline without cache, not found, gated, HTTP 5xx, broken, stalled or
            refused transfer, size mismatch, integrity), with what failed and what to do.
    """
    from huggingface_hub import constants

    repo_id, revision = _split_hub_id(hf_hub_id)
    pin = _pin_for(repo_id, filename, revision)
    revision = pin.commit if pin is not None else revision
    fail = Failure(label or hf_hub_id, repo_id, revision, filename)
    if not filename.endswith('.safetensors'):
        raise fail('timm_sknet only downloads safetensors weights, not pickles',
                   'Convert the checkpoint with timm_sknet.hub.export_hub_folder, or pass it yourself with '
                   "pretrained_cfg_overlay=dict(file=...) (loaded with torch.load(weights_only=True)).")
    cache = CachedFile(str(cache_dir or constants.HF_HUB_CACHE), repo_id, filename)
    timeout = stall_timeout if stall_timeout is not None else configured_stall_timeout()
    pointer = _locate(cache, revision or 'main', fail, timeout)
    digest = _verify(pointer, pin.sha256 if pin is not None else None, fail)
    _logger.info('Verified %s (sha256 %s)', pointer, digest)
    return pointer


def _locate(cache: CachedFile, revision: str, fail: Failure, stall_timeout: float) -> Path:
    """The file's snapshot path in the cache: found there, or downloaded, verified and cached."""
    if _is_offline():
        found = cache.find(revision)
        if found is None:
            raise fail(
                f'HF_HUB_OFFLINE is set and the file is not in the local cache ({cache.cache_dir})',
                'Download it once with the network on (unset HF_HUB_OFFLINE), or copy a filled cache there, '
                "or load a local file with pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').")
        return found
    if _GIT_SHA1.fullmatch(revision):  # a commit's files never change: no need to ask the Hub
        found = cache.find(revision)
        if found is not None:
            return found
    try:
        meta = _ask_hub(cache, revision)
    except WeightsError:
        raise
    except Exception as err:  # the Hub cannot say: use the cache as huggingface_hub does, unless it said "no such"
        found = cache.find(revision)
        if found is not None and not _is_not_found(err):
            _logger.info('The Hub could not be asked (%s); using the cached %s', type(err).__name__, found)
            return found
        raise describe(err, fail) from err
    return _download(cache, meta, revision, fail, stall_timeout)


def _is_not_found(err: BaseException) -> bool:
    from huggingface_hub import errors as hf_errors
    return isinstance(err, (hf_errors.RevisionNotFoundError, hf_errors.RemoteEntryNotFoundError))


def _ask_hub(cache: CachedFile, revision: str):
    """HEAD /resolve, once, no retries: commit, etag (X-Linked-Etag for LFS files), size and the download URL."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import FileMetadataError

    meta = get_hf_file_metadata(
        hf_hub_url(cache.repo_id, cache.filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT,
        library_name='timm_sknet', retry_on_errors=False)
    if not meta.commit_hash or not meta.etag or _digest_kind(meta.etag) is None:
        raise FileMetadataError(
            f'the server at {constants.ENDPOINT} answered without X-Repo-Commit or a sha256 / git ETag '
            f'(commit {meta.commit_hash!r}, etag {meta.etag!r}): it is not a Hugging Face Hub, check HF_ENDPOINT '
            'and any proxy')
    return meta


def _download(cache: CachedFile, meta, revision: str, fail: Failure, stall_timeout: float) -> Path:
    """Fetch the blob unless present (one process at a time), then link the snapshot to it."""
    pointer = cache.pointer(meta.commit_hash)
    if pointer.exists():  # this commit's file is cached (exists() follows the link: a dangling one is not)
        cache.record_ref(revision, meta.commit_hash)
        return pointer
    with cache.locked(meta.etag):
        if not cache.blob(meta.etag).exists():
            if cache.remove_leftovers(meta.etag):
                _logger.info('Removed partial downloads of %s left by an interrupted process', meta.etag)
            _fetch_blob(cache, meta, fail, stall_timeout)
        return cache.link(meta.commit_hash, meta.etag, revision)


def _fetch_blob(cache: CachedFile, meta, fail: Failure, stall_timeout: float) -> None:
    """Download into a temporary file beside the blob, check the announced digest, then rename it into place."""
    kind, expected = _digest_kind(meta.etag)
    with cache.new_blob(meta.etag) as tmp:
        try:
            download(meta.location, tmp, headers=_headers_for(meta.location), size=meta.size,
                     stall_timeout=stall_timeout, refresh_url=lambda: _fresh_location(cache, meta))
        except TransferError as err:
            raise fail(err.what, err.remedy) from err
        except WeightsError:
            raise
        except Exception as err:  # the Hub, asked for a fresh URL, failed: same language
            raise describe(err, fail) from err
        got = _digest_of(tmp, kind)
        if got != expected:
            raise fail(
                f'integrity check failed: the {kind} of the downloaded file is {got}, but the Hub announced '
                f'{expected}; the download was discarded and nothing was cached',
                'Load again: the next load downloads a fresh copy. If it keeps failing, something between you '
                'and the Hub alters the file (proxy, antivirus); fetch it another way and pass it with '
                "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').")


def _headers_for(url: str) -> Dict[str, str]:
    """huggingface_hub's headers (user agent, token), without the token when the URL is not the Hub's host."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(library_name='timm_sknet')
    hub, target = urlsplit(constants.ENDPOINT), urlsplit(url)
    if (hub.scheme, hub.netloc) != (target.scheme, target.netloc):
        headers = {k: v for k, v in headers.items() if k.lower() != 'authorization'}  # never hand a token to a CDN
    return headers


def _fresh_location(cache: CachedFile, meta) -> str:
    """Ask the Hub again (same commit) for a signed URL, the previous one having expired."""
    fresh = _ask_hub(cache, meta.commit_hash)
    if fresh.etag != meta.etag:
        raise TransferError(f'the file changed on the Hub during the download (etag {meta.etag} became '
                            f'{fresh.etag})', 'Load again.')
    return fresh.location


def pretrained_kwargs(variant: str, cfg: Any, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Return ``kwargs`` for ``build_model_with_cfg`` that load verified Hub weights, or ``kwargs`` unchanged.

    Applies when the resolved pretrained cfg would make timm download from the Hub (``hf_hub_id`` with no
    ``state_dict`` / ``file`` override): the file is fetched and verified here, and timm gets
    ``pretrained_cfg_overlay=dict(file=<verified path>)``, so its usual adaptation (``in_chans``,
    ``num_classes``, filter fn) still applies. A user's own file is loaded by timm (``.safetensors``, or
    ``torch.load(weights_only=True)`` for ``.pth`` / ``.bin``); here it is only checked to exist.
    """
    if cfg.state_dict is not None:
        return kwargs
    if cfg.file:
        if cfg.source != 'local-dir' and not os.path.isfile(cfg.file):
            raise WeightsError(
                f'Pretrained weights for {variant}: the file given as pretrained_cfg file {cfg.file!r} does not '
                f'exist. Pass the path of a .safetensors (or .pth / .bin state dict) file, or a folder with '
                f"timm.create_model('local-dir:/path/to/folder', pretrained=True).")
        return kwargs
    if not cfg.hf_hub_id or cfg.source == 'local-dir':
        return kwargs
    filename = cfg.hf_hub_filename or WEIGHTS_FILENAME
    label = f'{variant}.{cfg.tag}' if cfg.tag else variant
    path = fetch_verified_weights(cfg.hf_hub_id, filename, cache_dir=kwargs.get('cache_dir'), label=label)
    # source='' so that an 'hf-hub:' model (source='hf-hub') loads the verified file, not a second download.
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {}, file=str(path), source='')
    return dict(kwargs, pretrained_cfg_overlay=overlay)
