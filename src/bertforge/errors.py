"""User-facing errors.

Every mistake a user can make (a missing file, a bad config value, a wrong input) is raised
as a :class:`BertforgeError` whose message names the file, key or argument at fault, so the
CLI can print it in one line instead of a traceback from deep inside torch.
"""


class BertforgeError(Exception):
    """Base class: a problem with the user's input, files or arguments."""


class CheckpointError(BertforgeError):
    """A model or tokenizer directory that cannot be loaded as asked."""


class ConfigError(BertforgeError):
    """A configuration value of the wrong type or out of range."""


class InputError(BertforgeError):
    """Text or data given to a tokenizer, pipeline or trainer that cannot be used."""


def is_whole_number(value, minimum: int = 0) -> bool:
    """An int of at least `minimum`, as an option or a file's key must be: a bool is not one (Python counts
    True as 1, and JSON's true reads as True), nor is a float."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number(value) -> bool:
    """An int or a float, as a rate or a count in a file must be: a bool is not one (JSON's true reads as True)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def first_non_text(text: str, escaped_bytes: bool = False) -> tuple[int, str] | None:
    """The first character of `text` that is no text (UTF-8 cannot hold it) as (its number, counted from 1, and
    what it is), or None. In a str such a character is a lone surrogate; with `escaped_bytes` (text the command
    line decoded with surrogateescape) one standing for an undecodable byte is described as that byte."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        # Python's surrogateescape keeps an undecodable byte b as the code point U+DC00 + b.
        if escaped_bytes and 0xDC80 <= code <= 0xDCFF:
            return e.start + 1, f"byte 0x{code - 0xDC00:02x}"
        return e.start + 1, f"lone surrogate U+{code:04X}"
