"""Reading torch files from anyone without running their pickles.

A ``.pt`` or ``.ckpt`` file is a pickle: unpickled in full it may run any code its
author wrote into it. Researchers pass predictor checkpoints around as freely as the checkpoints
they predict, so both are read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers and refuses every other pickled global, unrun. A predictor checkpoint written by
``wsl fit`` holds nothing else but the few types in ``PREDICTOR_GLOBALS``; the predictor is then
built here from its hyperparameters and state_dict (``load_from_checkpoint`` would read the file
with Lightning's own settings), and ``wsl predict``, ``fit_predictor`` and the tests share this path.
"""
from __future__ import annotations

import inspect
import pathlib
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from wsl.prediction.model import PropertyPredictor
from zoo.errors import InputError, MissingFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SAVE_TENSORS = ("save the state_dict instead: torch.save(model.state_dict(), PATH) or "
                "safetensors.torch.save_file(model.state_dict(), PATH)")
NOT_OURS = "wsl fit writes only tensors and plain values: this file was written by something else, or altered"
# Types a wsl predictor checkpoint may hold besides tensors and plain values (Lightning saves the
# hyperparameters as plain dicts): paths given to the data module as ``Path`` objects.
PREDICTOR_GLOBALS = [pathlib.PosixPath]
PREDICTOR_FILE = "a predictor checkpoint (.ckpt) written by wsl fit"


def load_torch_file(path: str | Path, expected: str, allowed: list = (), hint: str = SAVE_TENSORS) -> Any:
    """The object in a torch file, read with ``weights_only=True`` (plus the ``allowed`` types).
    Anything else pickled in it is refused, unrun, with a ValueError that names it, says what the
    file should have been (``expected``) and what to do (``hint``)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: not found (expected {expected})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected {expected}")
    with open(path, "rb") as fh:
        head = fh.read(len(HDF5_SIGNATURE))
    if head == HDF5_SIGNATURE:
        raise InputError(f"{path}: is an HDF5 file (a zoo?), expected {expected}")
    unreadable = f"{path}: cannot be read as a torch file (not one torch.save wrote, or damaged), expected {expected}"
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on a garbled pickle header
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _pickled_globals(path, str(e), list(allowed))
        if not found:
            raise InputError(unreadable) from None
        if any(name.startswith("torch.nn.modules.") for name in found):
            what = "a whole pickled module (torch.save(model))"
        else:
            what = "pickled Python objects"
        raise InputError(f"{path}: refused: not a tensors-only file, it holds {what} ({', '.join(found)}), "
                         f"which cannot be read without running its pickle; expected {expected}; {hint}") from None
    except Exception:  # noqa: BLE001 - a truncated zip, a foreign format: the unpickler's words say nothing
        raise InputError(unreadable) from None


def _pickled_globals(path: Path, message: str, allowed: list) -> list[str]:
    """The disallowed globals in a refused file: listed by torch's static scan of the pickle (it runs
    nothing), or, for the legacy non-zip format, taken from the refusal message."""
    try:
        with torch.serialization.safe_globals(allowed):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the message names the first global
        return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))


def model_from_checkpoint(cls: type, ckpt: dict, source: str | Path = "checkpoint"):
    """A model of class ``cls`` rebuilt from a checkpoint dict's hyperparameters (those its
    ``__init__`` takes) and state_dict, in eval mode on the CPU; a mismatch is a ValueError."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted}
    try:
        model = cls(**hparams)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:300]
        raise InputError(f"{source}: does not build the {cls.__name__} its hyperparameters describe ({detail})") from None
    return model.eval()


def read_predictor_checkpoint(path: str | Path) -> dict:
    """A predictor checkpoint's dict, read without running code; what is not one is refused."""
    ckpt = load_torch_file(path, PREDICTOR_FILE, PREDICTOR_GLOBALS, hint=NOT_OURS)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict) \
            or not isinstance(ckpt.get("state_dict"), dict):
        found = (f"a dict with keys {sorted(map(str, ckpt))[:8]}" if isinstance(ckpt, dict)
                 else f"a {type(ckpt).__name__}")
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            found = f"a state_dict of {len(ckpt)} tensors (a network to predict? give it as an input)"
        raise InputError(f"{path}: expected {PREDICTOR_FILE} (with hyper_parameters and state_dict), found {found}")
    if "spec_json" not in ckpt["hyper_parameters"]:
        raise InputError(f"{path}: expected {PREDICTOR_FILE}, found a Lightning checkpoint of another model "
                         f"(hyperparameters {sorted(ckpt['hyper_parameters'])})")
    return ckpt


def predictor_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> PropertyPredictor:
    """The ``PropertyPredictor`` a checkpoint dict describes, in eval mode on the CPU."""
    accepted = set(inspect.signature(PropertyPredictor.__init__).parameters) - {"self"}
    hparams = dict(ckpt["hyper_parameters"])
    unknown = sorted(k for k in hparams if k not in accepted and not k.startswith("_"))  # "_": Lightning's
    if unknown:
        raise InputError(f"{source}: hyperparameters {unknown} are not PropertyPredictor's ({sorted(accepted)}); "
                         "was it written by another version of wsl?")
    try:
        model = PropertyPredictor(**{k: v for k, v in hparams.items() if k in accepted})
    except TypeError as e:
        raise InputError(f"{source}: its hyperparameters do not build a PropertyPredictor ({e})") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:300]
        raise InputError(f"{source}: its state_dict does not fit the predictor its hyperparameters describe "
                         f"({detail})") from None
    return model.eval()


def load_predictor(path: str | Path) -> PropertyPredictor:
    """A trained predictor from its checkpoint file, read without running code."""
    return predictor_from_checkpoint(read_predictor_checkpoint(path), path)
