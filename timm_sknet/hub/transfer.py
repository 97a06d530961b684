"""The bytes of one file over plain HTTP: resumed after a broken connection, a fresh URL when the signed one
expired, and a clear failure when nothing arrives for ``stall_timeout`` seconds.

huggingface_hub's own transfer gives each read 10 s (``HF_HUB_DOWNLOAD_TIMEOUT``) and retries 5 times, and
its retry counter restarts whenever a byte arrives: a CDN that stalls mid-body takes well over a minute to
fail, and nothing bounds it from outside. Here one clock bounds the whole wait: every request's timeout is
what is left of ``stall_timeout`` since the last byte arrived, so a stalled transfer fails ``stall_timeout``
seconds after its last byte, however many retries fit in between, while a slow transfer that keeps
delivering bytes never times out.

Requests go through huggingface_hub's HTTP client (``get_session()``: its proxies, certificates and
user agent). The caller hashes the result; nothing here decides whether the bytes are right.
"""
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Optional

from .failures import first_line, is_transport_error

__all__ = ['TransferError', 'download']

#: consecutive attempts that bring no new byte before giving up (a broken connection is retried, resumed)
MAX_TRIES_WITHOUT_PROGRESS = 3
_BACKOFF_S = (0.0, 0.5)  # a connection that broke after new data is retried at once


class TransferError(Exception):
    """The transfer failed: ``what`` happened, and ``remedy`` (if given) is what to do."""

    def __init__(self, what: str, remedy: Optional[str] = None) -> None:
        super().__init__(what)
        self.what, self.remedy = what, remedy


class _Retry(Exception):
    """A failure worth another attempt (broken connection, timeout, short body, CDN 5xx)."""


class _Refused(Exception):
    """The CDN refused the URL (403/401/410): a signed URL that expired, or one that was never valid."""


@dataclass
class _Progress:
    stall_timeout: float
    size: Optional[int]
    received: int = 0
    last_byte_at: float = field(default_factory=time.monotonic)
    tries_without_progress: int = 0
    refreshed_since_progress: bool = False

    def budget(self) -> float:
        """Seconds left before the transfer counts as stalled."""
        return self.stall_timeout - (time.monotonic() - self.last_byte_at)

    def got(self, n: int) -> None:
        self.received += n
        self.last_byte_at = time.monotonic()
        self.tries_without_progress = 0
        self.refreshed_since_progress = False

    def of_size(self) -> str:
        return f'{self.received:,} of {self.size:,} bytes' if self.size is not None else f'{self.received:,} bytes'


def download(url: str, dest: Path, *, headers: Dict[str, str], size: Optional[int], stall_timeout: float,
             refresh_url: Callable[[], str]) -> None:
    """Write the file at ``url`` to ``dest`` (created or truncated).

    Args:
        headers: request headers (no ``Authorization`` for a CDN host: the caller decides).
        size: the size the Hub announced, or None; the body must match it.
        stall_timeout: seconds without a byte after which the transfer fails.
        refresh_url: asks the Hub for a fresh signed URL (called once per expiry, then it gives up).

    Raises:
        TransferError: stalled, broken too often without progress, refused, or of the wrong size.
    """
    progress = _Progress(stall_timeout, size)
    with open(dest, 'wb') as f:
        while True:
            try:
                _attempt(url, f, headers, progress)
                return
            except _Refused as err:
                url = _fresh_url(err, progress, refresh_url)
            except _Retry as err:
                _wait_before_retry(err, progress)


def _fresh_url(err: _Refused, progress: _Progress, refresh_url: Callable[[], str]) -> str:
    """A new signed URL from the Hub, once per expiry: refused again without progress in between is final."""
    if progress.refreshed_since_progress:
        raise TransferError(
            f'the CDN refused the download URL ({err}) even after a fresh one was requested from the Hub; '
            f'{progress.of_size()} had arrived and were discarded',
            'Retry; if it persists, check the clock of this machine (signed URLs are valid for a limited time) '
            'and any proxy between you and the Hub.') from err
    progress.refreshed_since_progress = True
    return refresh_url()


def _wait_before_retry(err: _Retry, progress: _Progress) -> None:
    """Back off before the next attempt, unless the attempts or the stall budget are used up."""
    progress.tries_without_progress += 1
    if progress.tries_without_progress >= MAX_TRIES_WITHOUT_PROGRESS:
        raise TransferError(
            f'the connection broke {progress.tries_without_progress} times in a row with no new data '
            f'(last: {err}); {progress.of_size()} had arrived and were discarded') from err
    _stall_check(progress, err)
    time.sleep(min(_BACKOFF_S[progress.tries_without_progress - 1], max(progress.budget(), 0)))
    _stall_check(progress, err)


def _stall_check(progress: _Progress, err: Optional[BaseException]) -> None:
    if progress.budget() <= 0:
        raise TransferError(
            f'the transfer stalled: no data arrived for {progress.stall_timeout:g} s ({progress.of_size()} '
            f'received{f"; last: {err}" if err else ""}); the partial file was discarded',
            f'Retry on a steadier connection, or allow longer stalls with TIMM_SKNET_STALL_TIMEOUT=<seconds> '
            f'(now {progress.stall_timeout:g}); or load a local file with '
            "pretrained_cfg_overlay=dict(file='/path/to/model.safetensors').") from err


def _attempt(url: str, f: BinaryIO, headers: Dict[str, str], progress: _Progress) -> None:
    """One GET from where the file stands to its end; raises _Retry / _Refused / TransferError if it falls short."""
    from huggingface_hub.utils import get_session

    _stall_check(progress, None)
    request_headers = dict(headers, **({'Range': f'bytes={progress.received}-'} if progress.received else {}))
    try:
        with get_session().stream('GET', url, headers=request_headers, timeout=progress.budget(),
                                  follow_redirects=True) as response:
            _check_status(response, progress, f)
            for chunk in response.iter_bytes():  # as the network delivers them: the stall clock sees every byte
                f.write(chunk)
                progress.got(len(chunk))
                if progress.size is not None and progress.received > progress.size:
                    raise TransferError(f'the CDN sent more than the {progress.size:,} bytes the Hub announced; '
                                        'the partial file was discarded')
    except Exception as err:
        if is_transport_error(err):
            raise _Retry(f'{type(err).__name__}: {first_line(err)}') from err
        raise
    if progress.size is not None and progress.received < progress.size:
        raise _Retry(f'the body ended early at {progress.of_size()}')


def _check_status(response, progress: _Progress, f: BinaryIO) -> None:
    """Accept 200 / 206 (rewinding when a server ignored the Range); classify every other answer."""
    status = response.status_code
    if status in (401, 403, 410):
        response.read()
        raise _Refused(f'HTTP {status}: {_error_text(response)}')
    if status == 429 or status >= 500:
        raise _Retry(f'the CDN answered HTTP {status}')
    if status == 416:  # asked to resume past the end: the file is shorter than announced
        raise TransferError(_wrong_size(progress, progress.received))
    if status not in (200, 206):
        response.read()
        raise TransferError(f'the CDN answered HTTP {status}: {_error_text(response)}')
    if status == 206 and not response.headers.get('Content-Range', '').startswith(f'bytes {progress.received}-'):
        raise TransferError(f"the CDN answered a request for bytes {progress.received}- with "
                            f"{response.headers.get('Content-Range')!r}")
    total = _total_size(response)
    if progress.size is not None and total is not None and total != progress.size:
        raise TransferError(_wrong_size(progress, total))
    if status == 200 and progress.received:  # the server ignored the Range: start again from byte 0
        f.seek(0)
        f.truncate()
        progress.received = 0


def _total_size(response) -> Optional[int]:
    """The whole file's size as this response states it (Content-Range total, or an unencoded Content-Length)."""
    if response.status_code == 206:
        total = response.headers.get('Content-Range', '').rpartition('/')[2]
    elif 'Content-Encoding' not in response.headers:
        total = response.headers.get('Content-Length', '')
    else:
        return None
    return int(total) if total.isdigit() else None


def _wrong_size(progress: _Progress, served: int) -> str:
    return (f'the download had the wrong size: the Hub announced {progress.size:,} bytes, the CDN serves '
            f'{served:,}; nothing was cached')


def _error_text(response) -> str:
    """The short reason in an S3/CloudFront-style XML or a JSON error body, else the start of the body."""
    text = response.text[:2000]
    found = re.search(r'<Message>(.*?)</Message>', text) or re.search(r'"error"\s*:\s*"([^"]*)"', text)
    return (found.group(1) if found else text.strip().splitlines()[0] if text.strip() else 'no details')[:200]
