"""The exceptions eae raises for what a user or their machine caused (importable from ``eae``).

Each is a subclass of the built-in exception a Python user would catch anyway
(``ValueError``, ``FileExistsError``), so ``except ValueError`` keeps working. The
message speaks the language of the door it came through: ``str(e)`` names the Python
API's arguments (``resume=True``, ``out``); the command line prints :attr:`cli`, which
names the flags (``--resume``, ``--out``). Anything else that escapes eae is a bug of ours.
"""
from __future__ import annotations


class EaeError(Exception):
    """Base of eae's own errors: a user's input or their machine, never a bug of ours."""

    def __init__(self, message: str, *, cli: str | None = None, field: str | None = None):
        super().__init__(message)
        self.cli = cli if cli is not None else message  # the same error, in the words of the flags
        self.field = field  # the config field or option at fault, when there is one


class ConfigError(EaeError, ValueError):
    """A value that cannot be right (wrong type, out of range, not finite); names the field."""


class UnknownName(ConfigError, KeyError):
    """A name that no registry holds (a method, architecture, attack, suite); lists those that are."""
    __str__ = Exception.__str__  # the message as written, not KeyError's quoted repr


class ModelError(EaeError, ValueError):
    """The network given does not behave as a classifier (fails on a batch, returns other than
    finite logits of the right shape)."""


class OutputRefused(EaeError, FileExistsError):
    """eae will not write there: the folder or file is someone else's (or a link it did not
    make). Nothing was written; the message says why and what to do instead."""


class RunExists(OutputRefused):
    """The run folder holds a run already: resume it or choose another folder."""


class DatasetError(EaeError, RuntimeError):
    """The dataset is missing, incomplete, or fails verification; names the file. Written
    in the flags' words; ``str(e)`` says the same in the Python API's (``data_dir``)."""

    API_WORDS = {"--unverified-data": "unverified_data=True", "--svhn-extra": "svhn_extra=True",
                 "--cifar100-labels": "cifar100_labels", "--data-dir": "data_dir", "--image-size": "image_size",
                 "--val-size": "val_size", "--train-subset": "train_subset", "--bad-images": "bad_images"}

    def __init__(self, message: str, *, cli: str | None = None, field: str | None = None):
        parts = message.split("`")  # a command in backticks stays a command: its flags are its words
        for i in range(0, len(parts), 2):
            for flag, arg in self.API_WORDS.items():
                parts[i] = parts[i].replace(flag, arg)
        super().__init__("`".join(parts), cli=message if cli is None else cli, field=field)


class MissingFile(EaeError, FileNotFoundError):
    """A file the user named (a preset, say) is not there."""


class NotARun(EaeError, FileNotFoundError):
    """The folder given as a run holds no run of ``eae train`` (or is a file of one)."""
