"""A parser of protobuf's text format, the format of Caffe's ``.prototxt`` files, written from the format spec.

It needs no schema: every field becomes a list of values under its name, in file order, because a text file
alone does not say which fields are repeated. Values are ``Message`` (``name { ... }`` or ``name < ... >``),
``str`` (a quoted string, adjacent strings joined, C escapes decoded), ``int``, ``float``, ``bool``
(``true`` / ``false``) or ``Enum`` (any other bare word, such as ``MAX``). ``name: [a, b]`` is a list of
values. Comments run from ``#`` to the end of the line; ``,`` and ``;`` may end a field. Extension fields
(``[pkg.ext] { ... }``) and the ``Any`` expansion are not part of any prototxt this package reads, and are
reported as errors.
"""
import codecs
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Union

from .errors import CaffeError

__all__ = ['Enum', 'Message', 'format_prototxt', 'message', 'parse_prototxt', 'read_prototxt']


class Enum(str):
    """A bare word value (``pool: MAX``): an enum name, kept apart from quoted strings."""


Value = Union['Message', str, int, float, bool]
#: what a field read gives back: a prototxt's schema lives in caffe.proto, not here, so a reader knows (and checks)
#: what a field holds, as with ``json.loads``
Field = Any


class Message:
    """A parsed message: field name -> values in file order (a field that is not repeated has one value)."""

    def __init__(self) -> None:
        self.fields: Dict[str, List[Value]] = {}

    def add(self, name: str, value: Value) -> None:
        self.fields.setdefault(name, []).append(value)

    def all(self, name: str) -> List[Field]:
        """Every value of ``name`` (empty when absent)."""
        return self.fields.get(name, [])

    def get(self, name: str, default: Field = None) -> Field:
        """The last value of ``name``, as protobuf keeps the last of a non-repeated field; ``default`` if absent."""
        values = self.fields.get(name)
        return values[-1] if values else default

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.fields == other.fields

    def __repr__(self) -> str:
        return f'Message({self.fields!r})'


def message(**fields: Union[Value, List[Any]]) -> Message:
    """A ``Message`` from keyword arguments; a list value is a repeated field (``top=['a', 'b']``)."""
    msg = Message()
    for name, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            msg.add(name, v)
    return msg


class _Token(NamedTuple):
    kind: str  # 'string', 'number', 'word', 'punct', 'end'
    text: str
    offset: int


_TOKENS = re.compile(r'''
    (?P<skip>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?0[xX][0-9a-fA-F]+|[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?[fF]?(?![\w.]))
  | (?P<word>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}<>:\[\],;])
''', re.VERBOSE)
_CLOSE = {'{': '}', '<': '>'}
_BOOLS = {'true': True, 't': True, 'True': True, 'false': False, 'f': False, 'False': False}
_FLOAT_WORDS = {'inf': float('inf'), 'infinity': float('inf'), 'nan': float('nan')}


def _tokenize(text: str, source: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(text):
        m = _TOKENS.match(text, pos)
        if m is None:
            raise CaffeError(f'{source}:{_where(text, pos)}: unexpected character {text[pos]!r}; '
                             f'is this a Caffe .prototxt (protobuf text format)?')
        if m.lastgroup is not None and m.lastgroup != 'skip':  # every pattern is a named group
            yield _Token(m.lastgroup, m.group(), pos)
        pos = m.end()
    yield _Token('end', '', len(text))


def _where(text: str, offset: int) -> str:
    line = text.count('\n', 0, offset) + 1
    column = offset - (text.rfind('\n', 0, offset) + 1) + 1
    return f'{line}:{column}'


class _Parser:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.tokens = list(_tokenize(text, source))
        self.i = 0

    def error(self, token: _Token, expected: str) -> CaffeError:
        got = repr(token.text) if token.kind != 'end' else 'the end of the file'
        return CaffeError(f'{self.source}:{_where(self.text, token.offset)}: expected {expected}, got {got}')

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        self.i += 1
        return self.tokens[self.i - 1]

    def accept(self, text: str) -> bool:
        if self.peek().kind == 'punct' and self.peek().text == text:
            self.i += 1
            return True
        return False

    def message(self, close: Optional[str]) -> Message:
        msg = Message()
        while not (close and self.accept(close)):
            token = self.take()
            if token.kind == 'end' and close is None:
                return msg
            if token.kind != 'word':
                raise self.error(token, f'a field name{" or " + repr(close) if close else ""}')
            self.field(msg, token.text)
            self.accept(',') or self.accept(';')
        return msg

    def field(self, msg: Message, name: str) -> None:
        colon = self.accept(':')
        token = self.peek()
        if token.kind == 'punct' and token.text in _CLOSE:
            self.take()
            msg.add(name, self.message(_CLOSE[token.text]))
        elif not colon:
            raise self.error(token, f"':' or '{{' after the field name {name!r}")
        elif self.accept('['):
            while not self.accept(']'):
                msg.add(name, self.scalar_or_message())
                if not self.accept(','):
                    if not self.accept(']'):
                        raise self.error(self.peek(), "',' or ']' in a list")
                    break
        else:
            msg.add(name, self.scalar())

    def scalar_or_message(self) -> Value:
        token = self.peek()
        if token.kind == 'punct' and token.text in _CLOSE:
            self.take()
            return self.message(_CLOSE[token.text])
        return self.scalar()

    def scalar(self) -> Value:
        token = self.take()
        if token.kind == 'string':
            parts = [token]
            while self.peek().kind == 'string':  # "a" "b" is one string, "ab"
                parts.append(self.take())
            return ''.join(_unquote(t.text) for t in parts)
        if token.kind == 'number':
            return _number(token.text)
        if token.kind == 'word':
            word = token.text
            if word in _BOOLS:
                return _BOOLS[word]
            if word.lstrip('-').lower() in _FLOAT_WORDS:
                value = _FLOAT_WORDS[word.lstrip('-').lower()]
                return -value if word.startswith('-') else value
            return Enum(word)
        raise self.error(token, 'a value')


def _unquote(quoted: str) -> str:
    body = quoted[1:-1].encode('utf-8')
    return codecs.escape_decode(body)[0].decode('utf-8', errors='replace')


def _number(text: str) -> Union[int, float]:
    if re.fullmatch(r'[-+]?0[xX][0-9a-fA-F]+', text):
        return int(text, 16)
    if re.fullmatch(r'[-+]?\d+', text):
        return int(text)
    return float(text.rstrip('fF'))


def parse_prototxt(text: str, source: str = '<prototxt>') -> Message:
    """Parse text-format ``text``; ``source`` names it in errors (``file:line:column: expected ...``)."""
    return _Parser(text, source).message(close=None)


def read_prototxt(path: Union[str, Path]) -> Message:
    """Parse the prototxt file at ``path`` (UTF-8); a missing or unreadable file raises ``CaffeError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise CaffeError(f'{path}: no such file; give the path of the model .prototxt') from None
    except UnicodeDecodeError:
        raise CaffeError(f'{path}: not a text file; a .prototxt is protobuf text format (did you swap the '
                         f'prototxt and the caffemodel?)') from None
    except OSError as e:
        raise CaffeError(f'{path}: cannot be read ({e.strerror or e})') from None
    return parse_prototxt(text, str(path))


def _format_scalar(value: Value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return '"' + value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n') + '"'
    return repr(value)


def format_prototxt(msg: Message, indent: int = 0) -> str:
    """``msg`` in protobuf text format, two spaces per level, as Caffe's own files are written."""
    pad = '  ' * indent
    lines = []
    for name, values in msg.fields.items():
        for value in values:
            if not isinstance(value, Message):
                lines.append(f'{pad}{name}: {_format_scalar(value)}')
                continue
            lines.append(f'{pad}{name} {{')
            if value.fields:
                lines.append(format_prototxt(value, indent + 1))
            lines.append(f'{pad}}}')
    return '\n'.join(lines)
