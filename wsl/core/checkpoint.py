"""Reading torch files from anyone without running their pickles, and ``load_model``: the one
loader of every model family's checkpoints.

A ``.pt`` or ``.ckpt`` file is a pickle: unpickled in full it may run any code its author wrote
into it. Researchers pass model checkpoints around as freely as the checkpoints they predict, so
both are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers
and refuses every other pickled global, unrun. A checkpoint written by ``wsl fit`` holds nothing
else but the few types in ``CHECKPOINT_GLOBALS``. Its class is named by the tag
``WeightSpaceModule.on_save_checkpoint`` writes (``wsl_model``: class path and kind); the model is
rebuilt here from its hyperparameters and state_dict (``load_from_checkpoint`` would read the file
with Lightning's own settings). Only classes of the ``wsl`` package, or subclasses of
``WeightSpaceModule`` the running program has already imported, are ever built: a file names a
class, it never brings one.
"""
from __future__ import annotations

import importlib
import inspect
import pathlib
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from wsl.core.module import CHECKPOINT_TAG, WeightSpaceModule
from zoo.errors import InputError, MissingFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SAVE_TENSORS = ("save the state_dict instead: torch.save(model.state_dict(), PATH) or "
                "safetensors.torch.save_file(model.state_dict(), PATH)")
NOT_OURS = "wsl fit writes only tensors and plain values: this file was written by something else, or altered"
# Types a wsl checkpoint may hold besides tensors and plain values (Lightning saves the
# hyperparameters as plain dicts): paths given to the data module as ``Path`` objects.
CHECKPOINT_GLOBALS = [pathlib.PosixPath]
# Checkpoints written before the one tag: their class, from the keys they carry.
LEGACY_CLASSES = {
    "WeightDiffusion": ("wsl.diffusion.model.WeightDiffusion", "generator"),
    "LatentDiffusion": ("wsl.diffusion.model.LatentDiffusion", "generator"),
    "HyperNetwork": ("wsl.hyper.model.HyperNetwork", "hypernetwork"),
    "INRHyperNetwork": ("wsl.hyper.inr.INRHyperNetwork", "INR hypernetwork"),
}
PREDICTOR_CLASS = ("wsl.prediction.model.PropertyPredictor", "predictor")
# A network's weights from anyone: torch state_dicts, safetensors, Lightning checkpoints, HF-style folders.
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
STATE_DICT_FILE = ("a state_dict (.pt/.pth/.bin saved with torch.save(model.state_dict()), .safetensors, a Lightning "
                   ".ckpt, or a folder holding model.safetensors)")
# The weights file of a Hugging Face-style folder (beside its config.json), in the order they are looked for.
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def hf_weights(folder: str | Path) -> Path | None:
    """The weights file of a Hugging Face-style folder, or None when ``folder`` is not one."""
    folder = Path(folder)
    return next((folder / n for n in HF_WEIGHTS if (folder / n).is_file()), None) if folder.is_dir() else None


def keeps_module_order(path: str | Path) -> bool:
    """False for files that store tensors sorted by name (safetensors): their order is not the module's."""
    path = Path(path)
    if path.suffix in STATE_DICT_SUFFIXES:  # a file (no stat: an import asks this of every file)
        return path.suffix != ".safetensors"
    weights = hf_weights(path) if path.is_dir() else path
    return weights is None or weights.suffix != ".safetensors"


def load_state_dict_file(path: str | Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from an untrusted file: tensors only, never pickled code. The common wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``, a ``module.`` prefix) are taken off; a Lightning
    checkpoint's state_dict loses the attribute its LightningModule kept the network under
    (``model.``, ``net.``) where every name has it; a folder is read as a Hugging Face-style one.
    ``data``: a safetensors file's bytes, already read (by a caller that also hashes them)."""
    from wsl.weights.matching import unwrap_state_dict

    path = Path(path)
    if path.is_dir():
        weights = hf_weights(path)
        if weights is None:
            raise InputError(f"{path}: a folder without {' or '.join(HF_WEIGHTS)}, expected {STATE_DICT_FILE}")
        path = weights
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from safetensors.torch import load

        if data is None and not path.exists():
            raise MissingFileError(f"{path}: not found (expected {STATE_DICT_FILE})")
        try:
            obj = load_file(str(path)) if data is None else load(data)
        except Exception as e:  # noqa: BLE001 - safetensors' own error type: one clear message
            raise InputError(f"{path}: cannot be read as a safetensors file ({e}), expected {STATE_DICT_FILE}") from None
    else:
        obj = load_torch_file(path, STATE_DICT_FILE)
    lightning = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and (
        "pytorch-lightning_version" in obj or "global_step" in obj)
    sd = unwrap_state_dict(obj, str(path))
    return strip_common_prefix(sd) if lightning else sd


def strip_common_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model.0.weight`` -> ``0.weight`` where every name starts with the same ``<attribute>.``."""
    heads = {k.split(".", 1)[0] for k in sd}
    if len(heads) == 1 and all("." in k for k in sd) and all(k.count(".") >= 2 for k in sd):
        n = len(next(iter(heads))) + 1
        return {k[n:]: v for k, v in sd.items()}
    return sd


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


def _a(kind: str) -> str:
    """``a predictor checkpoint``, ``an INR hypernetwork checkpoint``."""
    return f"a{'n' if kind[0] in 'aeiouAEIOU' else ''} {kind} checkpoint"


def describe(expected: type[WeightSpaceModule]) -> str:
    """How an error names the file it wanted: ``a predictor checkpoint (.ckpt) written by wsl fit``."""
    return f"{_a('model' if expected is WeightSpaceModule else expected.kind)} (.ckpt) written by wsl fit"


def checkpoint_class(ckpt: dict) -> tuple[str, str] | None:
    """(class path, kind) a checkpoint dict names, or None when it is no wsl model's."""
    tag = ckpt.get(CHECKPOINT_TAG)
    if isinstance(tag, dict) and isinstance(tag.get("class"), str):
        return tag["class"], str(tag.get("kind", "model"))
    for key in ("wsl_generator", "wsl_hypernetwork"):  # written before the one tag
        if ckpt.get(key) in LEGACY_CLASSES:
            return LEGACY_CLASSES[ckpt[key]]
    hparams = ckpt.get("hyper_parameters")
    if isinstance(hparams, dict) and "spec_json" in hparams and "encoder" in hparams:
        return PREDICTOR_CLASS
    return None


def read_checkpoint(path: str | Path, expected: type[WeightSpaceModule] = WeightSpaceModule) -> dict:
    """A wsl checkpoint's dict, read without running code. A file that is not one, or is one of
    another family than ``expected``, is refused with what it is."""
    want = describe(expected)
    ckpt = load_torch_file(path, want, CHECKPOINT_GLOBALS, hint=NOT_OURS)
    if not isinstance(ckpt, dict):
        raise InputError(f"{path}: expected {want}, found a {type(ckpt).__name__}")
    named = checkpoint_class(ckpt)
    if named is None or not isinstance(ckpt.get("hyper_parameters"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            found = f"a state_dict of {len(ckpt)} tensors (a network's weights: give it as an input, not as the model)"
        elif isinstance(ckpt.get("state_dict"), dict):
            found = f"a Lightning checkpoint of another model (keys {sorted(map(str, ckpt))[:8]})"
        else:
            found = f"a dict with keys {sorted(map(str, ckpt))[:8]}"
        raise InputError(f"{path}: expected {want}, found {found}")
    cls = _known_class(named[0])
    if cls is None or not issubclass(cls, expected):
        found_kind = cls.kind if cls is not None else named[1]
        raise InputError(f"{path}: expected {want}, found {_a(found_kind)} ({named[0].rsplit('.', 1)[-1]})")
    return ckpt


def _known_class(path: str) -> type[WeightSpaceModule] | None:
    """The ``WeightSpaceModule`` subclass at ``path``: one of the wsl package (imported by name), or
    one the running program has imported; None otherwise."""
    module, _, name = path.rpartition(".")
    if module == "wsl" or module.startswith("wsl."):
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    pending, seen = [WeightSpaceModule], set()
    while pending:
        cls = pending.pop()
        if f"{cls.__module__}.{cls.__qualname__}" == path:
            return cls
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                pending.append(sub)
    return None


def model_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint",
                          expected: type[WeightSpaceModule] = WeightSpaceModule) -> WeightSpaceModule:
    """The model a checkpoint dict (``read_checkpoint``) describes, in eval mode on the CPU, its
    normalizers those the data fitted."""
    cls = _known_class(checkpoint_class(ckpt)[0])
    if cls is None or not issubclass(cls, expected):
        raise InputError(f"{source}: expected {describe(expected)}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    hparams = dict(ckpt["hyper_parameters"])
    unknown = sorted(k for k in hparams if k not in accepted and not k.startswith("_"))  # "_": Lightning's
    if unknown:
        raise InputError(f"{source}: hyperparameters {unknown} are not {cls.__name__}'s ({sorted(accepted)}); "
                         "was it written by another version of wsl?")
    try:
        model = cls(**{k: v for k, v in hparams.items() if k in accepted})
    except TypeError as e:
        raise InputError(f"{source}: its hyperparameters do not build a {cls.__name__} ({e})") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:300]
        raise InputError(f"{source}: its state_dict does not fit the {cls.__name__} its hyperparameters describe "
                         f"({detail})") from None
    model.normalizers_fitted = True
    return model.eval()


def load_model(path: str | Path, expected: type[WeightSpaceModule] = WeightSpaceModule) -> WeightSpaceModule:
    """A trained model from its checkpoint file, read without running code: a model of class
    ``expected`` or a subclass (``PropertyPredictor``, ``WeightGenerator``, ``HyperNetwork``, ...)."""
    return model_from_checkpoint(read_checkpoint(path, expected), path, expected)
