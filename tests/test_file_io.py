"""The one writer every file of the package goes through: complete or absent, never partial, nothing left over."""
import os
import threading

import pytest

from timm_sknet.file_io import atomic_file, atomic_folder, git_blob_sha1, sha256_file, write_text_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    dest = write_text_atomic(tmp_path / 'out.txt', 'old')
    with pytest.raises(RuntimeError):
        with atomic_file(dest) as tmp:
            tmp.write_text('half')
            raise RuntimeError('crash mid-write')
    assert dest.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']


def test_writes_land_whole_with_the_usual_permissions(tmp_path):
    dest = write_text_atomic(tmp_path / 'sub' / 'out.txt', 'new')  # the folder is created
    assert dest.read_text() == 'new'
    umask = os.umask(0)
    os.umask(umask)
    assert (dest.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_concurrent_writers_never_share_a_temporary_name(tmp_path):
    dest = tmp_path / 'out.txt'
    texts = [str(i) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=write_text_atomic, args=(dest, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dest.read_text() in texts  # one writer's whole text, not a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']


def test_folder_swap_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    dest = tmp_path / 'folder'
    with atomic_folder(dest) as tmp:
        (tmp / 'a').write_text('1')
    with pytest.raises(ValueError):
        with atomic_folder(dest) as tmp:
            (tmp / 'b').write_text('2')
            raise ValueError('interrupted')
    assert sorted(p.name for p in dest.iterdir()) == ['a']
    with atomic_folder(dest) as tmp:
        (tmp / 'c').write_text('3')
    assert sorted(p.name for p in dest.iterdir()) == ['c']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['folder']


def test_digests_match_hashlib_and_git(tmp_path):
    import hashlib
    path = tmp_path / 'f'
    path.write_bytes(b'hello\n')
    assert sha256_file(path) == hashlib.sha256(b'hello\n').hexdigest()
    # `git hash-object` of "hello\n"
    assert git_blob_sha1(path) == 'ce013625030ba8dba906f756967f9e9ca394464a'
