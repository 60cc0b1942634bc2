"""The two errors every command raises, and the input checks commands run before any slow work.

`multiverse.cli.main` turns them into one line on stderr, `multiverse <command>: error: <message>`:
UsageError exits 2 (the command line or a config is wrong), CommandError exits 1 (valid input, the work failed).
A traceback is printed only with `--debug`.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path


class UsageError(Exception):
    """Bad input: a flag, a path, a config value. Exit status 2."""

    exit_code = 2


class CommandError(Exception):
    """The input was valid but the work failed (a file could not be read, a server went away). Exit status 1."""

    exit_code = 1


def check_model_path(spec: str, flag: str = "--model") -> str:
    """A usable model reference: a local directory holding config.json, or a hub id (cached, when offline).

    Returns the spec unchanged (a local path with `~` expanded). Never touches the network.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {spec}: is a file, not a model directory")
        if not (path / "config.json").is_file():
            raise UsageError(f"{flag} {spec}: not a Hugging Face model directory (no config.json in it)")
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not all(spec.split("/")):
        raise UsageError(f"{flag} {spec}: no such directory (nor a hub id of the form org/name)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise UsageError(
                f"{flag} {spec}: no such directory, and the hub id is not in the local Hugging Face cache "
                "(HF_HUB_OFFLINE=1; download it first or give a local directory)"
            )
    return spec


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """The address can be bound now (port 0 = any free port)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"{flag} {port}: a port lies in 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve ({e.strerror})") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds: TIME_WAIT is no conflict
        try:
            s.bind(address)
        except OSError as e:
            raise UsageError(f"{flag} {port}: cannot listen on {host}:{port} ({e.strerror})") from e


def check_device(name: str | None, flag: str = "--device") -> None:
    """A device string torch understands and this machine has (None = the model's own).

    Without a CUDA driver reporting a device, `cuda` is refused from the driver library alone (no torch import:
    a usage error comes back at once); torch is asked only where a GPU or MPS may really be there."""
    if name is None:
        return
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", name.strip())
    if match is None:
        raise UsageError(f"{flag} {name}: not a device (use cpu, cuda, cuda:1, mps)")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if cuda_driver_devices() == 0:
            raise UsageError(f"{flag} {name}: no CUDA device on this machine (no CUDA driver reports one)")
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: no CUDA device on this machine (torch.cuda.is_available() is False)")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise UsageError(f"{flag} {name}: MPS is not available on this machine")


def cuda_driver_devices() -> int:
    """CUDA devices the driver library reports (0 when there is no libcuda, or it sees none), without torch."""
    import ctypes

    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(library)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def check_at_least(flag: str, value: float | None, low: float) -> None:
    """value >= low (None = unset, accepted)."""
    if value is not None and value < low:
        raise UsageError(f"{flag} {value}: must be >= {low}")


def check_tokenizer(spec: str, flag: str = "--model"):  # noqa: ANN201 - a Hugging Face tokenizer
    """Load the tokenizer of `spec` (already checked by check_model_path) and require the twelve structure tags."""
    from transformers import AutoTokenizer

    from multiverse.tags import TagIds

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {spec}: cannot load its tokenizer ({' '.join(str(e).split())[:300]})") from e
    try:
        TagIds.from_tokenizer(tokenizer)
    except ValueError as e:
        raise UsageError(f"{flag} {spec}: {e}") from e
    return tokenizer


def check_choices(flag: str, values: list[str], allowed: list[str] | tuple[str, ...]) -> None:
    """Every value is one of `allowed`; an unknown one is named with the closest allowed one."""
    import difflib

    for value in values:
        if value not in allowed:
            close = difflib.get_close_matches(value, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{flag}: unknown {value!r}{hint}; choose from {', '.join(allowed)}")


def check_data_file(spec: str | None, flag: str) -> None:
    """A local data file (.jsonl, .json, .parquet) named by `spec` exists; a hub data set name is left to the loader."""
    if spec and Path(spec).suffix in (".jsonl", ".json", ".parquet") and not Path(spec).expanduser().is_file():
        raise UsageError(f"{flag} {spec}: no such file")
