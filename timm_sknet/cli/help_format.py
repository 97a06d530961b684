"""The command line's help: plain text, whatever markup the docstrings it quotes carry, and every option's default.

Every parser of ``timm-sknet`` is a :class:`Parser`; ``add_subparsers`` makes subcommands of the parser's own class,
so a subcommand added with ``sub.add_parser(...)`` gets the same help without doing anything.
"""
import argparse
import copy
import re
from typing import Any

__all__ = ['HelpFormatter', 'Parser', 'default_text', 'plain_text']

#: reST roles (:func:`x`, :class:`~a.b`) and inline literals (``x``), as docstrings write them
_REST = ((re.compile(r':[a-z]+:`~?([^`]+)`'), r'\1'), (re.compile(r'``([^`]+)``'), r'\1'))


def plain_text(text: str) -> str:
    """``text`` without reST markup: what a terminal should show of a docstring."""
    for pattern, replacement in _REST:
        text = pattern.sub(replacement, text)
    return text


def default_text(action: argparse.Action) -> str:
    """An option's default as a user types or reads it: on / off for flags, none, or the value(s)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return 'on' if action.default else 'off'
    if action.default is None or (isinstance(action.default, (dict, list, tuple)) and not action.default):
        return 'none'
    if isinstance(action.default, (list, tuple)):
        return ' '.join(str(v) for v in action.default)
    return str(action.default)


class HelpFormatter(argparse.HelpFormatter):
    """Plain text, and ``(default: ...)`` after every optional option whose help does not already say its default
    (a required option has none to show)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings:
            # argparse prints no help column at all for an option without help text: give it one, its default
            action = copy.copy(action)
            action.help = ''
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain_text(action.help or '').strip()
        shown = 'default' in text.lower() or action.default is argparse.SUPPRESS
        positional_without_default = not action.option_strings and action.default is None
        if shown or positional_without_default or action.required or isinstance(action, argparse._SubParsersAction):
            return text
        return f'{text} (default: {default_text(action)})'.strip().replace('%', '%%').replace('%%(', '%(')

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter` (and so are its subcommands' parsers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('formatter_class', HelpFormatter)
        super().__init__(*args, **kwargs)
