"""One language for every Hub failure: :class:`~timm_sknet.errors.WeightsError` naming model, repo, cause, remedy.

huggingface_hub raises its own exception types (``RepositoryNotFoundError``, ``GatedRepoError``, ...) for Hub
answers, the HTTP client's (``httpx2.ReadTimeout``, ``RemoteProtocolError``, ...) for transport failures, which
are not even ``OSError``, and hf_xet's for Xet transfers. :func:`describe` maps them all onto the one message
format of :class:`Failure`; :func:`hub_model_errors` applies it around code that timm runs before any of ours (``hf-hub:`` config.json).
"""
import os
from contextlib import contextmanager
from typing import Iterator, Optional

from ..errors import WeightsError, remedy

__all__ = ['Failure', 'describe', 'hub_model_errors', 'is_offline', 'known_hub_failure', 'local_file', 'local_folder',
           'retry_or_go_local']


def is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set in the environment since."""
    from huggingface_hub import constants
    env = os.environ.get('HF_HUB_OFFLINE', '').strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in ('1', 'ON', 'YES', 'TRUE')


def local_file() -> str:
    """How to load a weights file of one's own, in the caller's words (Python or command line)."""
    return remedy("pretrained_cfg_overlay=dict(file='/path/to/model.safetensors')",
                  '--checkpoint /path/to/model.safetensors')


def local_folder() -> str:
    """How to load an exported Hub-format folder, in the caller's words."""
    return remedy("timm.create_model('local-dir:/path/to/folder', pretrained=True)",
                  '--model local-dir:/path/to/folder')


def retry_or_go_local() -> str:
    """The remedy for a Hub that cannot be used now: retry, or load without the network (never a setting that is
    already in effect)."""
    if is_offline():
        return (f'Unset HF_HUB_OFFLINE to download the file once (or copy a filled Hugging Face cache here), or '
                f'load a local file with {local_file()}, or an exported folder with {local_folder()}.')
    return ('Retry; to load without the network, fill the Hugging Face cache once (or copy a filled cache) and '
            f'set HF_HUB_OFFLINE=1, or load a local file with {local_file()}, or an exported folder with '
            f'{local_folder()}.')
_TRANSPORT_MODULES = ('httpx', 'httpx2', 'httpcore', 'httpcore2')


class Failure:
    """Builds the one message format of every download failure of one file of one repo."""

    def __init__(self, label: str, repo_id: str, revision: Optional[str], filename: str) -> None:
        self.label, self.repo_id, self.revision, self.filename = label, repo_id, revision, filename

    def __call__(self, what: str, remedy: Optional[str] = None) -> WeightsError:
        at = f'@{self.revision}' if self.revision else ''
        return WeightsError(
            f"Pretrained weights for {self.label} could not be loaded from Hugging Face Hub repo "
            f"'{self.repo_id}{at}' (file {self.filename}): {what}. {remedy or retry_or_go_local()}")


def is_transport_error(err: BaseException) -> bool:
    """An exception of the HTTP client huggingface_hub uses (httpx2 now, httpx before): not an OSError."""
    return type(err).__module__.split('.')[0] in _TRANSPORT_MODULES


def _hub_answer(err: BaseException, fail: Failure) -> Optional[WeightsError]:
    """WeightsError for huggingface_hub's own exception types (``None`` for other exceptions)."""
    from huggingface_hub import errors as hf_errors

    if isinstance(err, hf_errors.LocalEntryNotFoundError):  # an EntryNotFoundError, but nothing is missing remotely
        cause = err.__cause__ or err.__context__
        if cause is not None and cause is not err:
            return known_hub_failure(cause, fail)
        return fail('HF_HUB_OFFLINE is set and the file is not in the local cache' if is_offline() else
                    'the Hub could not be reached and the file is not in the local cache')
    # most specific first: GatedRepoError is a RepositoryNotFoundError, both are HfHubHTTPError
    known = (
        (hf_errors.GatedRepoError, 'the repository is gated and no accepted access token was sent',
         'Accept its terms on the repository page, then log in (`hf auth login`) or set HF_TOKEN; or load a '
         'local file or folder.'),
        (hf_errors.RepositoryNotFoundError, 'the repository does not exist (or is private and no valid token was sent)',
         'Check the repo id (' + remedy('hf_hub_id in the pretrained_cfg, or the hf-hub: name',
                                        'the hf-hub: name given to --model') + '), or log in (`hf auth login`, '
         'HF_TOKEN) for a private repository.'),
        (hf_errors.RevisionNotFoundError, f'revision {fail.revision!r} does not exist in the repository',
         "Pin an existing branch, tag or commit as 'org/repo@<revision>'."),
        (hf_errors.EntryNotFoundError, 'the repository has no such file at this revision',
         f'Point to a repository that holds {fail.filename}, or convert the weights with '
         + remedy('timm_sknet.hub.export_hub_folder.', '`timm-sknet convert`.')),
        (hf_errors.OfflineModeIsEnabled, 'HF_HUB_OFFLINE is set and the file is not in the local cache', None),
    )
    for kind, what, fix in known:
        if isinstance(err, kind):
            return fail(what, fix)
    if isinstance(err, hf_errors.HfHubHTTPError):
        status = getattr(getattr(err, 'response', None), 'status_code', None)
        if status is not None and status >= 500:
            return fail(f'the Hub answered HTTP {status} (server error) and the file is not cached')
        return fail(f'the Hub answered HTTP {status}: {first_line(err)}')
    return None


def _transport(err: BaseException, fail: Failure, transfer: bool) -> Optional[WeightsError]:
    """WeightsError for a raw transport exception of the HTTP client (``None`` for others)."""
    if not is_transport_error(err):
        return None
    name = type(err).__name__
    if 'Connect' in name:
        return fail(f'the Hub could not be reached ({name}: {first_line(err)}) and the file is not cached')
    if 'Timeout' in name and transfer:
        from huggingface_hub import constants
        return fail(
            f'the transfer stalled: no data arrived for {constants.HF_HUB_DOWNLOAD_TIMEOUT:g} s, also after '
            "huggingface_hub's retries; nothing was cached",
            'Retry on a steadier connection, or allow longer silences with HF_HUB_DOWNLOAD_TIMEOUT=<seconds> '
            "(huggingface_hub's read timeout).")
    if 'Timeout' in name:
        return fail(f'the Hub did not answer in time ({name}: {first_line(err)})')
    return fail(f'the connection broke ({name}: {first_line(err)}); nothing was cached')


def _transfer_failure(err: BaseException, fail: Failure, xet: bool) -> Optional[WeightsError]:
    """WeightsError for what only goes wrong while the bytes move: a refused URL, a wrong size, a Xet failure."""
    from huggingface_hub import errors as hf_errors

    if xet:  # hf_xet's errors are bare RuntimeErrors; its token route's are huggingface_hub's
        return fail(f'the Xet transfer failed ({type(err).__name__}: {first_line(err)}); nothing was cached',
                    'Retry; if it keeps failing, download over plain HTTPS instead of Xet with HF_HUB_DISABLE_XET=1.')
    status = getattr(getattr(err, 'response', None), 'status_code', None)
    if isinstance(err, hf_errors.HfHubHTTPError) and status == 403:
        return fail('the storage server refused the download URL (HTTP 403)',
                    'Retry: every load asks the Hub for a fresh signed URL. If it keeps failing, check this '
                    "machine's clock (signed URLs expire) and any proxy between you and the Hub.")
    if isinstance(err, OSError) and 'Consistency check failed' in str(err):
        return fail(f'the download had the wrong size ({first_line(err)}); nothing was cached')
    return None


def known_hub_failure(err: BaseException, fail: Failure, transfer: bool = False,
                      xet: bool = False) -> Optional[WeightsError]:
    """WeightsError for a Hub answer or a transport failure, ``None`` for anything else (a bug, a bad argument).

    ``transfer``: raised while the file was downloaded (after the Hub was asked); ``xet``: by hf_xet's transfer.
    """
    return ((transfer and _transfer_failure(err, fail, xet)) or _hub_answer(err, fail)
            or _transport(err, fail, transfer))


def describe(err: BaseException, fail: Failure, transfer: bool = False, xet: bool = False) -> WeightsError:
    """Map any exception raised while downloading to WeightsError (unknown ones keep their type in the text)."""
    return known_hub_failure(err, fail, transfer, xet) or fail(f'{type(err).__name__}: {first_line(err)}')


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def hub_model_errors(model_name: str, filename: str = 'config.json') -> Iterator[None]:
    """Turn Hub and transport failures inside the block into WeightsError for ``model_name``.

    For ``timm.create_model('hf-hub:org/repo', ...)``: timm downloads ``config.json`` with huggingface_hub
    before it knows the architecture, so before any timm_sknet code runs, and its failures arrive as
    huggingface_hub's exceptions. timm_sknet does not patch timm to change that for every model; wrap the call
    in this block to get WeightsError (the ``timm-sknet`` command does). Other exceptions pass unchanged.
    """
    try:
        yield
    except WeightsError:
        raise
    except Exception as err:
        name = model_name.split(':', 1)[-1] if model_name.startswith('hf-hub:') else model_name
        repo_id, _, revision = name.partition('@')
        mapped = known_hub_failure(err, Failure(model_name, repo_id, revision or None, filename))
        if mapped is None:
            raise
        raise mapped from err
