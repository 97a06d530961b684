"""Verified downloads of pretrained weights from the Hugging Face Hub.

timm fetches ``model.safetensors`` with ``huggingface_hub`` and loads whatever lands in the cache: neither
checks the file's sha256, so one same-size corrupted download poisons the cache and every later load fails
(or, worse, loads garbage) until the user deletes files by hand. Transport failures also surface as raw
``httpx`` exceptions, and an unreachable Hub costs about 23 s of retries before failing.

This module downloads only ``model.safetensors`` (never a pickle), hashes it before it is loaded, checks the
digest against one pinned in :data:`PINNED_SHA256` or else the one the Hub announced (an LFS file's ETag is
its sha256, and huggingface_hub names the cached blob after it), evicts a bad cache entry so the next load
downloads afresh, and turns every failure into :class:`~timm_sknet.errors.WeightsError` that says what
failed and what to do. The verified local file is then handed to timm's normal loading path, so its
``in_chans`` / ``num_classes`` adaptation still runs.
"""
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import WeightsError
from ..file_io import git_blob_sha1, sha256_file

__all__ = ['PINNED_SHA256', 'WEIGHTS_FILENAME', 'fetch_verified_weights', 'pretrained_kwargs']

_logger = logging.getLogger(__name__)

WEIGHTS_FILENAME = 'model.safetensors'

# sha256 of weight files whose digest was computed by us, keyed by '<hf_hub_id as in the cfg>/<filename>'.
# Left empty on purpose: the files of timm/skresnet18.ra_in1k, timm/skresnet34.ra_in1k and
# timm/skresnext50_32x4d.ra_in1k could not be downloaded where this package was built (no access to the Hub),
# and a digest copied from elsewhere unverified would be worse than none. Without an entry here, the file is
# checked against the sha256 the Hub announces for it (its LFS ETag). See weights_card.md.
PINNED_SHA256: Dict[str, str] = {}

_SHA256 = re.compile(r'[0-9a-f]{64}')
_GIT_SHA1 = re.compile(r'[0-9a-f]{40}')


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


class _Failure:
    """Builds the one message format of every download failure."""

    def __init__(self, label: str, repo_id: str, revision: Optional[str], filename: str) -> None:
        self.label, self.repo_id, self.revision, self.filename = label, repo_id, revision, filename

    def __call__(self, what: str, remedy: Optional[str] = None) -> WeightsError:
        at = f'@{self.revision}' if self.revision else ''
        remedy = remedy or (
            'Retry; to load without the network, fill the Hugging Face cache once (or copy a filled cache) and '
            'set HF_HUB_OFFLINE=1, or load a local file with '
            "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors'), or an exported folder with "
            "timm.create_model('local-dir:/path/to/folder', pretrained=True).")
        return WeightsError(
            f"Pretrained weights for {self.label} could not be loaded from Hugging Face Hub repo "
            f"'{self.repo_id}{at}' (file {self.filename}): {what}. {remedy}")


def _hub_error(err: BaseException, fail: _Failure) -> Optional[WeightsError]:
    """WeightsError for huggingface_hub's own exception types (``None`` for other exceptions)."""
    from huggingface_hub import errors as hf_errors

    # most specific first: GatedRepoError is a RepositoryNotFoundError, both are HfHubHTTPError
    known = (
        (hf_errors.GatedRepoError, 'the repository is gated and no accepted access token was sent',
         'Accept its terms on the Hub and log in (`hf auth login`), or use a local file or folder.'),
        (hf_errors.RepositoryNotFoundError, 'the repository does not exist (or is private and no valid token was sent)',
         'Check the hf_hub_id in the pretrained_cfg, or log in for a private repository.'),
        (hf_errors.RevisionNotFoundError, f'revision {fail.revision!r} does not exist in the repository',
         "Pin an existing branch, tag or commit as 'org/repo@<revision>'."),
        (hf_errors.EntryNotFoundError, 'the repository has no such file at this revision',
         'Point the pretrained_cfg at a repository that holds model.safetensors, or convert the weights with '
         'timm_sknet.hub.export_hub_folder.'),
        (hf_errors.OfflineModeIsEnabled, 'HF_HUB_OFFLINE is set and the file is not in the local cache', None),
    )
    for kind, what, remedy in known:
        if isinstance(err, kind):
            return fail(what, remedy)
    if isinstance(err, hf_errors.HfHubHTTPError):
        status = getattr(getattr(err, 'response', None), 'status_code', None)
        if status is not None and status >= 500:
            return fail(f'the Hub answered HTTP {status} (server error) and the file is not cached')
        return fail(f'the Hub answered HTTP {status}: {_first_line(err)}')
    if isinstance(err, hf_errors.LocalEntryNotFoundError):
        cause = err.__cause__ or err.__context__
        if cause is not None and cause is not err:
            return _describe(cause, fail)
        return fail('the Hub could not be reached and the file is not in the local cache')
    return None


def _transport_error(err: BaseException, fail: _Failure) -> Optional[WeightsError]:
    """WeightsError for a raw transport exception from httpx / httpcore (``None`` for others)."""
    if type(err).__module__.split('.')[0] not in ('httpx', 'httpx2', 'httpcore', 'httpcore2'):
        return None
    name = type(err).__name__
    if 'Connect' in name:
        return fail(f'the Hub could not be reached ({name}: {_first_line(err)}) and the file is not cached')
    if 'Timeout' in name:
        return fail(f'the connection timed out ({name}: {_first_line(err)})')
    return fail(f'the connection broke during the download ({name}: {_first_line(err)}); '
                'the partial file was discarded')


def _describe(err: BaseException, fail: _Failure) -> WeightsError:
    """Map a huggingface_hub / transport exception to WeightsError."""
    mapped = _hub_error(err, fail) or _transport_error(err, fail)
    if mapped is not None:
        return mapped
    if isinstance(err, OSError) and 'Consistency check failed' in str(err):
        return fail(f'the download had the wrong size ({_first_line(err)}); the partial file was discarded')
    return fail(f'{type(err).__name__}: {_first_line(err)}')


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _announced_digest(pointer: Path) -> Optional[Tuple[str, str]]:
    """``('sha256' | 'git-sha1', hex)`` the Hub announced for a cached file, read from its blob's name.

    huggingface_hub stores a download as ``blobs/<etag>`` and links ``snapshots/<commit>/<file>`` to it. An LFS
    file's ETag is the sha256 of its content; a small (non-LFS) file's is its git blob sha1.
    """
    if not pointer.is_symlink():
        return None
    name = Path(os.path.realpath(pointer)).name
    if _SHA256.fullmatch(name):
        return 'sha256', name
    if _GIT_SHA1.fullmatch(name):
        return 'git-sha1', name
    return None


def _evict(pointer: Path) -> None:
    """Remove a cached file: the blob and the snapshot link that points to it."""
    blob = Path(os.path.realpath(pointer))
    for path in (pointer, blob):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _verify(pointer: Path, pinned: Optional[str], fail: _Failure, hub_etag: Optional[str] = None) -> str:
    """Hash the cached file; on mismatch evict it and raise. Returns its sha256."""
    actual = sha256_file(pointer)
    announced = _announced_digest(pointer)
    if announced is None and hub_etag:
        announced = ('sha256', hub_etag) if _SHA256.fullmatch(hub_etag) else ('git-sha1', hub_etag)
    if announced is not None:
        kind, expected = announced
        got = actual if kind == 'sha256' else git_blob_sha1(pointer)
        if got != expected:
            _evict(pointer)
            raise fail(
                f'integrity check failed: the {kind} of the downloaded file is {got}, but the Hub announced '
                f'{expected}; the corrupted cache entry was removed',
                'Load again: the next load downloads a fresh copy. If it keeps failing, something between you '
                'and the Hub alters the file (proxy, disk); fetch it another way and pass it with '
                "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').")
    if pinned is not None and actual != pinned:
        if announced is None or announced[0] != 'sha256':
            _evict(pointer)
        raise fail(
            f'integrity check failed: sha256 {actual} does not match the sha256 pinned in timm_sknet ({pinned})'
            + ('; the file is what the Hub serves, so the repository changed since it was pinned'
               if announced is not None else '; the cache entry was removed'),
            "Pin the verified revision as hf_hub_id='org/repo@<commit>' in the pretrained_cfg, or pass a "
            "trusted file with pretrained_cfg_overlay=dict(file=...).")
    if announced is None and pinned is None:
        _logger.warning(
            'Could not verify %s: no pinned sha256 and the Hub-announced digest is unknown '
            '(cache without symlinks, offline). sha256=%s', pointer, actual)
    return actual


def fetch_verified_weights(
        hf_hub_id: str,
        filename: str = WEIGHTS_FILENAME,
        cache_dir: Optional[Union[str, Path]] = None,
        label: Optional[str] = None,
) -> Path:
    """Download (or find in the cache) one weights file of a Hub repo, verify its sha256, return its path.

    Args:
        hf_hub_id: ``'org/repo'`` or ``'org/repo@<revision>'`` (branch, tag or commit).
        filename: the file in the repo; only safetensors is fetched by this package.
        cache_dir: the Hugging Face cache to use (default: huggingface_hub's, i.e. ``HF_HUB_CACHE``).
        label: what is being loaded, for messages (e.g. ``'sknet50.ra_in1k'``).

    Raises:
        WeightsError: for every failure (offline without cache, not found, HTTP 5xx, broken or truncated
            transfer, size mismatch, integrity), with what failed and what to do.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

    repo_id, revision = _split_hub_id(hf_hub_id)
    fail = _Failure(label or hf_hub_id, repo_id, revision, filename)
    if not filename.endswith('.safetensors'):
        raise fail('timm_sknet only downloads safetensors weights, not pickles',
                   'Convert the checkpoint with timm_sknet.hub.export_hub_folder, or pass it yourself with '
                   "pretrained_cfg_overlay=dict(file=...) (loaded with torch.load(weights_only=True)).")
    cache_dir = str(cache_dir) if cache_dir is not None else None
    offline = _is_offline()
    hub_etag = None
    try:
        cached = _cached_path(repo_id, filename, cache_dir, revision)
        if not offline and cached is None:
            # The first download: ask the Hub once, without retries. hf_hub_download would retry an
            # unreachable or failing Hub for about 23 s before giving up when nothing is cached.
            meta = get_hf_file_metadata(
                hf_hub_url(repo_id, filename, revision=revision), timeout=constants.HF_HUB_ETAG_TIMEOUT,
                library_name='timm_sknet', retry_on_errors=False)
            hub_etag = meta.etag
        path = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            library_name='timm_sknet')
    except WeightsError:
        raise
    except Exception as err:  # every transport / Hub error becomes WeightsError, chained for debugging
        if offline:
            raise fail(
                f'HF_HUB_OFFLINE is set and the file is not in the local cache '
                f'({cache_dir or constants.HF_HUB_CACHE})',
                'Download it once with the network on (unset HF_HUB_OFFLINE), or copy a filled cache there, '
                "or load a local file with pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').",
            ) from err
        raise _describe(err, fail) from err
    pointer = Path(path)
    digest = _verify(pointer, PINNED_SHA256.get(f'{hf_hub_id}/{filename}'), fail, hub_etag)
    _logger.info('Verified %s (sha256 %s)', pointer, digest)
    return pointer


def _cached_path(repo_id: str, filename: str, cache_dir: Optional[str], revision: Optional[str]) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return found if isinstance(found, str) else None


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
