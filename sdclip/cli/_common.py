"""Options and output helpers that several subcommands share.

Outputs: ``output_path`` / ``output_folder`` check an output early (before any model loads), so an
unwritable one is one line and exit 2; ``atomic_write`` writes a temporary file in the same folder and
replaces the target only on success (the temporary is removed on any failure); ``OutputLock`` keeps two
runs from writing one file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console

from ..errors import SdclipError
from ..prompts.lists import has_lone_surrogate
from ..prompts.lists import printable as shown  # names that were not UTF-8, printable on any terminal

if TYPE_CHECKING:
    from ..models.options import LoadOptions


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for whole numbers >= ``minimum``; anything else is argparse's usage error (exit 2).

    Example:
        >>> whole_number(1)("8")
        8
    """

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value!r}")
        return number

    return parse


def add_model_options(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """``--model``, ``--device``, ``--dtype``, ``--allow-pickle``, ``--offline``."""
    parser.add_argument("--model", default=default, metavar="SRC",
                        help="hub id, model folder, pipeline folder or .safetensors checkpoint"
                        + (f" (default: {default})" if default else ""))
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                        help="default: fp16 on cuda, fp32 on cpu")
    parser.add_argument("--allow-pickle", action="store_true", help="accept .ckpt/.pt/.bin checkpoints")
    parser.add_argument("--offline", action="store_true", help="never touch the network (like HF_HUB_OFFLINE=1)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The flags ``add_model_options`` defines, as the ``LoadOptions`` every loader takes."""
    from ..models.options import LoadOptions

    return LoadOptions(device=args.device, dtype=args.dtype, local_files_only=True if args.offline else None,
                       allow_pickle=args.allow_pickle)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _writable_folder(folder: Path, value: str, option: str) -> None:
    """Create ``folder`` if needed and prove a file can be created in it (root ignores permission bits)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".sdclip-probe-", suffix=".tmp")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise SdclipError(f"{option} '{value}': cannot write in folder '{folder}' ({_reason(error)}); "
                          "choose a writable location") from None


def output_path(value: str, *, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """``value`` as an output file with one of ``suffixes``, checked before any work: not a folder, not a
    device, in a folder that exists (or is created) and can be written.

    Example:
        >>> import tempfile
        >>> output_path(tempfile.mkdtemp(), suffixes=(".csv",))
        Traceback (most recent call last):
        ...
        sdclip.errors.SdclipError: --out '...': expected a file ending in .csv
    """
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise SdclipError(f"{option} '{value}': expected a file ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise SdclipError(f"{option} '{value}': is a folder; expected a file path")
    if path.exists() and not path.is_file():
        raise SdclipError(f"{option} '{value}': exists and is not a regular file; choose another path")
    _writable_folder(Path(os.path.realpath(path)).parent, value, option)
    return path


def output_folder(value: str, *, option: str = "--out") -> Path:
    """``value`` as an output folder: created if needed, and writable (checked before any work)."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise SdclipError(f"{option} '{value}': is a file; expected a folder")
    _writable_folder(path, value, option)
    return path


def atomic_write(path: Path, write: Callable[[IO[Any]], None], *, option: str = "--out", binary: bool = False,
                 **open_options: Any) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then put it in ``path``'s place.

    On any failure (disk full, interrupt, an error in ``write``) the temporary file is removed and
    ``path`` is left as it was; an ``OSError`` becomes one ``SdclipError`` line naming ``option``.
    """
    target = Path(os.path.realpath(path))  # a symlinked output: replace the file, keep the link
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise SdclipError(f"{option} '{path}': cannot write ({_reason(error)})") from None
    try:
        mode = "wb" if binary else "w"
        with os.fdopen(descriptor, mode, **({} if binary else {"newline": "", **open_options})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise SdclipError(f"{option} '{path}': cannot write ({_reason(error)}); nothing was changed") from None
        raise
    return path


def save_png(fig: Any, path: Path, *, option: str = "--out", dpi: int = 100) -> Path:
    """Save a matplotlib figure as a PNG with ``atomic_write`` (as ``plots.save_figure`` draws it)."""
    return atomic_write(path, lambda file: fig.savefig(file, dpi=dpi, format="png"), option=option, binary=True)


def write_failed(path: Path, error: OSError, option: str = "--out") -> SdclipError:
    """The one-line error for an output that failed mid-write (disk full, file system gone read-only)."""
    return SdclipError(f"{option} '{path}': cannot write ({_reason(error)})")


class OutputLock:
    """An exclusive ``<out>.lock`` (created with O_CREAT|O_EXCL, holding the pid) while a run writes ``out``.

    A second run sees the lock and stops with one line. A lock whose pid is no longer running (a run killed
    with -9) is stale: it is taken over, with a note on stderr. The lock is removed when the run ends.
    Same-machine only (the pid is checked locally).
    """

    def __init__(self, out: Path, *, option: str = "--out") -> None:
        self.out, self.option = out, option
        self.path = Path(os.path.realpath(out)).with_name(Path(os.path.realpath(out)).name + ".lock")

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise SdclipError(f"{self.option} '{self.out}': cannot create lock file '{self.path}' "
                              f"({_reason(error)})") from None
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{os.getpid()}\n")
        return True

    def _holder(self) -> int | None:
        """The pid in the lock file if that process is running, else None (stale or unreadable)."""
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid  # alive, another user's
        return pid

    def __enter__(self) -> OutputLock:
        for _ in range(3):
            if self._create():
                return self
            holder = self._holder()
            if holder is not None and holder != os.getpid():
                raise SdclipError(f"{self.option} '{self.out}': another sdclip run (pid {holder}) is writing it "
                                  f"(lock file '{self.path}'); wait for it to finish, or delete the lock file "
                                  "if that process is not sdclip")
            stderr().print(f"taking over the stale lock '{self.path}' (its process is not running)")
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise write_failed(self.path, error, self.option) from None
        raise SdclipError(f"{self.option} '{self.out}': could not take the lock file '{self.path}'; "
                          "is another run starting?")

    def __exit__(self, *exc: object) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()
        except OSError:
            pass


def same_file(out: Path, inputs: Iterable[str | os.PathLike], *, option: str = "--out", what: str = "input") -> None:
    """Refuse an output that resolves to one of ``inputs`` (writing it would destroy the input)."""
    target = os.path.normcase(os.path.realpath(out))
    for item in inputs:
        if os.path.normcase(os.path.realpath(item)) == target or (
                out.exists() and os.path.exists(item) and os.path.samefile(out, item)):
            raise SdclipError(f"{option} '{out}': is the {what} '{os.fsdecode(item)}'; "
                              "choose another output file")


def prompt_text(value: str) -> str:
    """argparse type for a prompt: refuse bytes that are not UTF-8 (they reach Python as lone surrogates)."""
    if has_lone_surrogate(value):
        raise argparse.ArgumentTypeError(f"prompt {shown(value)!r} holds bytes that are not UTF-8; "
                                         "pass the prompt as UTF-8 text")
    return value


def stdout() -> Console:
    """A rich console on stdout (tables)."""
    return Console(file=sys.stdout, soft_wrap=True)


def stderr() -> Console:
    """A rich console on stderr (notes, progress)."""
    return Console(file=sys.stderr, soft_wrap=True)
