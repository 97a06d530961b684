"""Verified downloads of pretrained weights from the Hugging Face Hub.

``huggingface_hub.hf_hub_download`` moves the bytes: transport, cache, per-blob lock, retries, Xet. Neither it nor
timm checks what it cached, so this module adds what is the package's own:

* **integrity** - every load, cached or not, hashes the file against its pin (:mod:`.pins`), else against the
  digest the Hub announced for it, which names the blob in the cache (the sha256 of an LFS file, the git blob
  sha1 of a file stored in git); a mismatch evicts the entry and raises;
* **one error** - every failure is a :class:`~timm_sknet.errors.WeightsError` naming model, repo, cause and
  remedy (:mod:`.failures`);
* **fast failure** - before a file that is not cached is downloaded, the Hub is asked once without retries
  (``get_hf_file_metadata``), so an unreachable Hub is reported at once instead of after huggingface_hub's retries
  with backoff (it retries its metadata request when nothing is cached).

How long a stalled transfer takes to fail is huggingface_hub's ``HF_HUB_DOWNLOAD_TIMEOUT`` (seconds per read)
times its retries; the measured default is in the documentation ("Pretrained weights").
"""
import dataclasses
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from ..errors import WeightsError, remedy
from ..file_io import git_blob_sha1, sha256_file
from .failures import Failure, describe, is_offline, local_file
from .pins import PINS, Pin

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

__all__ = ['WEIGHTS_FILENAME', 'fetch_verified_weights', 'verified_pretrained_cfg']

_logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = 'model.safetensors'
LIBRARY_NAME = 'timm_sknet'

_SHA256 = re.compile(r'[0-9a-f]{64}')
_GIT_SHA1 = re.compile(r'[0-9a-f]{40}')


def _split_hub_id(hf_hub_id: str) -> Tuple[str, Optional[str]]:
    repo_id, _, revision = hf_hub_id.partition('@')
    if '@' in revision or not repo_id:
        raise WeightsError(f"Invalid hf_hub_id {hf_hub_id!r}: expected 'org/repo' or 'org/repo@<revision>'.")
    return repo_id, revision or None


def _digest_kind(etag: Optional[str]) -> Optional[Tuple[str, str]]:
    """``('sha256' | 'git-sha1', hex)`` for an ETag the Hub gives a file, ``None`` for anything else."""
    if etag and _SHA256.fullmatch(etag):
        return 'sha256', etag
    if etag and _GIT_SHA1.fullmatch(etag):
        return 'git-sha1', etag
    return None


def _announced_digest(pointer: Path) -> Optional[Tuple[str, str]]:
    """The digest the Hub announced for a cached file: the name of the blob its snapshot entry links to.

    huggingface_hub stores a download as ``blobs/<etag>`` and links ``snapshots/<commit>/<file>`` to it (one
    link: a Xet download's blob may itself link on into a shared store named by the Xet hash); where symlinks
    are not supported the snapshot entry is a copy, and the name is lost.
    """
    return _digest_kind(Path(os.readlink(pointer)).name) if pointer.is_symlink() else None


def _evict(pointer: Path) -> None:
    """Remove a cached file: the snapshot entry, the blob it links to, and what that blob links to (a shared Xet
    store, which huggingface_hub would otherwise link again on the next load)."""
    paths = [pointer]
    if pointer.is_symlink():
        paths += [pointer.parent / os.readlink(pointer), Path(os.path.realpath(pointer))]
    for path in paths:
        path.unlink(missing_ok=True)


def _verify(pointer: Path, pin: Optional[Pin], probed_etag: Optional[str], downloaded: bool, fail: Failure) -> str:
    """Hash the cached file once; on a mismatch evict it (unless it is what the Hub serves) and raise."""
    actual = sha256_file(pointer)
    announced = _announced_digest(pointer) or _digest_kind(probed_etag)
    where = 'downloaded file' if downloaded else 'cached file'
    if announced is not None:
        kind, expected = announced
        got = actual if kind == 'sha256' else git_blob_sha1(pointer)
        if got != expected:
            _evict(pointer)
            raise fail(
                f'integrity check failed: the {kind} of the {where} is {got}, but the Hub announced {expected}; '
                'the corrupted cache entry was removed',
                'Load again: the next load downloads a fresh copy. If it keeps failing, something alters the file '
                f'(proxy, antivirus, disk); fetch it another way and pass it with {local_file()}.')
    if pin is not None and actual != pin.sha256:
        if announced is None or announced[0] != 'sha256':
            _evict(pointer)
        raise fail(
            f'integrity check failed: sha256 {actual} does not match the sha256 pinned in timm_sknet ({pin.sha256})'
            + ('; the file is what the Hub serves, so the repository changed since it was pinned'
               if announced is not None else '; the cache entry was removed'),
            remedy("Pin the verified revision as hf_hub_id='org/repo@<commit>' in the pretrained_cfg, or pass a "
                   f'trusted file with {local_file()}.', f'Pass a trusted file with {local_file()}.'))
    if announced is None and pin is None:
        _logger.warning('Could not verify %s: no pinned sha256, and the digest the Hub announced is unknown '
                        '(a cache without symlinks). sha256=%s', pointer, actual)
    return actual


def _pin_for(repo_id: str, filename: str, revision: Optional[str]) -> Optional[Pin]:
    """The pin of this file, unless the caller asked for another revision than the pinned commit."""
    pin = PINS.get(f'{repo_id}/{filename}')
    return pin if pin is not None and revision in (None, pin.commit) else None


def _probe(repo_id: str, filename: str, revision: str) -> 'HfFileMetadata':
    """Ask the Hub once, without retries, for the file's metadata (fast errors; the etag for caches without links)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import FileMetadataError

    meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision),
                                timeout=constants.HF_HUB_ETAG_TIMEOUT, library_name=LIBRARY_NAME, retry_on_errors=False)
    if not meta.commit_hash or _digest_kind(meta.etag) is None:
        raise FileMetadataError(
            f'the server at {constants.ENDPOINT} answered without X-Repo-Commit or a sha256 / git ETag '
            f'(commit {meta.commit_hash!r}, etag {meta.etag!r}): it is not a Hugging Face Hub, check HF_ENDPOINT '
            'and any proxy')
    return meta


def _uses_xet(meta: Any) -> bool:
    """Whether huggingface_hub hands this file to hf_xet (the Hub announced Xet storage and hf_xet is usable)."""
    from huggingface_hub import constants
    return (getattr(meta, 'xet_file_data', None) is not None and not constants.HF_HUB_DISABLE_XET
            and importlib.util.find_spec('hf_xet') is not None)


def fetch_verified_weights(
        hf_hub_id: str,
        filename: str = WEIGHTS_FILENAME,
        cache_dir: Optional[Union[str, Path]] = None,
        label: Optional[str] = None,
) -> Path:
    """Download (or find in the cache) one weights file of a Hub repo, verify it, and return its cached path.

    Args:
        hf_hub_id: ``'org/repo'`` or ``'org/repo@<revision>'`` (branch, tag or commit).
        filename: the file in the repo; only safetensors is fetched by this package.
        cache_dir: the Hugging Face cache to use (default: huggingface_hub's, i.e. ``HF_HUB_CACHE``).
        label: what is being loaded, for messages (e.g. ``'sknet50.ra_in1k'``).

    Raises:
        WeightsError: for every failure (offline without cache, unreachable, not found, gated, HTTP 5xx, broken or
            stalled transfer, Xet failure, size mismatch, integrity), with what failed and what to do.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    repo_id, revision = _split_hub_id(hf_hub_id)
    pin = _pin_for(repo_id, filename, revision)
    revision = pin.commit if pin is not None else revision
    fail = Failure(label or hf_hub_id, repo_id, revision, filename)
    revision = revision or 'main'
    if not filename.endswith('.safetensors'):
        raise fail('timm_sknet only downloads safetensors weights, not pickles',
                   remedy('Convert the checkpoint with timm_sknet.hub.export_hub_folder', 'Convert the checkpoint '
                          'with `timm-sknet convert`') + f', or pass it yourself with {local_file()} (loaded with '
                   'torch.load(weights_only=True)).')
    cache_dir = str(cache_dir or constants.HF_HUB_CACHE)
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    cached = cached if isinstance(cached, str) else None
    if is_offline() and cached is None:
        raise fail(f'HF_HUB_OFFLINE is set and the file is not in the local cache ({cache_dir})',
                   'Download it once with the network on (unset HF_HUB_OFFLINE), or copy a filled cache there, or '
                   f'load a local file with {local_file()}.')
    try:
        meta = _probe(repo_id, filename, revision) if cached is None else None
    except Exception as err:
        raise describe(err, fail) from err
    try:
        path = cached if cached is not None and is_offline() else hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, library_name=LIBRARY_NAME)
    except Exception as err:
        raise describe(err, fail, transfer=True, xet=_uses_xet(meta)) from err
    pointer = Path(path)
    digest = _verify(pointer, pin, getattr(meta, 'etag', None), cached is None, fail)
    _logger.info('Verified %s (sha256 %s)', pointer, digest)
    return pointer


def verified_pretrained_cfg(variant: str, cfg: Any, cache_dir: Optional[str] = None) -> Any:
    """``cfg`` (a resolved ``PretrainedCfg``) with its Hub weights fetched and verified here, or ``cfg`` unchanged.

    Applies when ``cfg`` would make timm download from the Hub (``hf_hub_id`` with no ``state_dict`` / ``file``
    override): the result names the verified file instead (``file=<path>``, ``source=''``, so an ``hf-hub:`` model
    loads it rather than downloading a second time), and timm's usual adaptation (``in_chans``, ``num_classes``,
    filter fn) still applies when it loads it. A user's own file is loaded by timm (``.safetensors``, or
    ``torch.load(weights_only=True)`` for ``.pth`` / ``.bin``); here it is only checked to exist.
    """
    if cfg.state_dict is not None:
        return cfg
    if cfg.file:
        if cfg.source != 'local-dir' and not os.path.isfile(cfg.file):
            raise WeightsError(
                f'Pretrained weights for {variant}: the file given as pretrained_cfg file {cfg.file!r} does not '
                f'exist. Pass the path of a .safetensors (or .pth / .bin state dict) file, or a folder with '
                f"timm.create_model('local-dir:/path/to/folder', pretrained=True).")
        return cfg
    if not cfg.hf_hub_id or cfg.source == 'local-dir':
        return cfg
    filename = cfg.hf_hub_filename or WEIGHTS_FILENAME
    label = f'{variant}.{cfg.tag}' if cfg.tag else variant
    path = fetch_verified_weights(cfg.hf_hub_id, filename, cache_dir=cache_dir, label=label)
    # custom_load=False: what timm's own overlay of a new weight source does (the file is a plain state dict)
    return dataclasses.replace(cfg, file=str(path), source='', custom_load=False)
