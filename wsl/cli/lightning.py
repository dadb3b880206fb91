"""``wsl fit|validate|test``: one LightningCLI over every model family.

A config names the model's and the data's classes (``class_path``): any subclass of
``WeightSpaceModule`` on any ``LightningDataModule``, the shipped families and a user's own
alike. What a model needs from its data (the weight space, the source zoo, the conditions, the
target and its number of outputs) is linked from the instantiated DataModule into each argument
of that name the model's class takes, so a config names only the zoo, the target and the
model's own options. ``--config NAME`` also finds a shipped config by name (``digits_hnp``).

Before each subcommand the DataModule is set up and the model receives its normalizers. Two
checkpoints are kept (``wsl.core.trainer``): the best by ``val/score`` on validation runs, and
``last.ckpt`` after every epoch, to resume from with ``--ckpt_path``; ``fit`` ends by saying where
both are. Test runs are only ever evaluated, never used to choose.

A mistake in the command or the config (a misspelled key, a missing zoo, an unknown target or
encoder, a checkpoint that is not there) ends in one ``wsl: error:`` line.
"""
from __future__ import annotations

import difflib
import glob
import importlib
import inspect
import logging
import re
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from wsl.core.module import WeightSpaceModule
from wsl.core.trainer import SCORE, TRAINER_DEFAULTS, best_checkpoint, last_checkpoint
from zoo.config import resolve_config
from zoo.errors import InputError, MissingFileError

# DataModule attributes a model's argument of the same name is linked from.
DATA_LINKS = ("spec_json", "source_json", "conditions", "num_outputs", "task_type", "class_names", "target")
RUN_KINDS = ("predict", "diffusion", "hyper")  # the shipped configs ``--config NAME`` looks in
# Errors raised, not printed with the usage (the command line says them in one line); no
# abbreviated option names (a misspelled key must not silently set another).
HELP = ("{what} a weight-space model. --config FILE or the name of a shipped config (configs/predict/, "
        "configs/diffusion/, configs/hyper/); --model.help CLASS lists a model's options (e.g. "
        "wsl.prediction.model.PropertyPredictor, wsl.diffusion.model.WeightDiffusion, wsl.hyper.HyperNetwork), "
        "--data.help CLASS a data module's (wsl.data.PropertyDataModule, wsl.data.WeightDataModule, ...).")
PARSER_KWARGS = {"exit_on_error": False, "allow_abbrev": False,
                 **{sub: {"exit_on_error": False, "allow_abbrev": False, "description": HELP.format(what=what)}
                    for sub, what in (("fit", "Train"), ("validate", "Validate"), ("test", "Test"))}}
# Lightning's notes that say nothing about the user's run (dataloader workers on a small CPU machine,
# the logger fallback, library deprecations, args given from Python, a tested checkpoint's folder).
QUIET = (r".*does not have many workers.*", r".*LightningCLI's args parameter is intended.*",
         r".*`tensorboardX` has been removed.*", r".*LeafSpec.*", r".*The dirpath has changed from.*")


class WSLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for attr in DATA_LINKS:  # applied only where the chosen model class takes the argument
            # no conditions: None, as the data's own argument reads (the logger merges both hparams)
            compute = (lambda names: list(names) or None) if attr == "conditions" else None
            parser.link_arguments(f"data.{attr}", f"model.init_args.{attr}", compute_fn=compute, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Refuse options the chosen classes do not take (jsonargparse would keep them aside, unused)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        for key in ("model", "data"):
            chosen = config.get(key)
            extra = sorted((chosen.get("dict_kwargs") or {}) if chosen is not None else {})
            if extra:
                raise InputError(f"{key}: {chosen.class_path} takes no option {', '.join(map(repr, extra))}"
                                 f"{_did_you_mean(extra[0], chosen.class_path)}")

    def _hand_over_normalizers(self) -> None:
        """A checkpoint given with --ckpt_path replaces these buffers with its own when it loads."""
        self.datamodule.setup("fit")
        self.model.set_normalizers(**self.datamodule.normalizers())

    def before_fit(self) -> None:
        self._hand_over_normalizers()

    def before_validate(self) -> None:
        self._hand_over_normalizers()

    def before_test(self) -> None:
        self._hand_over_normalizers()

    def after_fit(self) -> None:
        for cb in self.trainer.checkpoint_callbacks:
            if not isinstance(cb, ModelCheckpoint):
                continue
            if cb.monitor == SCORE and cb.best_model_path:
                print(f"best checkpoint: {cb.best_model_path} ({SCORE} {float(cb.best_model_score):.4f})")
            elif cb.monitor is None and cb.best_model_path:  # unmonitored, one kept: the latest (last.ckpt)
                print(f"last checkpoint: {cb.best_model_path} (resume with --ckpt_path)")


def _resolve_config_names(args: list[str]) -> list[str]:
    """``--config NAME`` -> the shipped config of that name, where NAME is not a file."""
    out = list(args)
    for k, a in enumerate(out):
        if a == "--config" and k + 1 < len(out):
            out[k + 1] = str(resolve_config(out[k + 1], RUN_KINDS))
        elif a.startswith("--config="):
            out[k] = "--config=" + str(resolve_config(a[len("--config="):], RUN_KINDS))
    return out


def _check_ckpt_path(args: list[str]) -> None:
    """A --ckpt_path that is not a file is named with what matches it (a quoted pattern is not expanded)."""
    for k, a in enumerate(args):
        value = args[k + 1] if a == "--ckpt_path" and k + 1 < len(args) else \
            a[len("--ckpt_path="):] if a.startswith("--ckpt_path=") else None
        if value is None or value in ("last", "best", "hpc", "registry") or Path(value).is_file():
            continue
        matches = sorted(glob.glob(value))
        hint = (f"; the pattern matches {len(matches)} file(s), e.g. {matches[-1]}: give one" if matches
                else "; a pattern in quotes is not expanded by the shell" if any(c in value for c in "*?[") else "")
        raise MissingFileError(f"--ckpt_path {value}: not found{hint}")


# Lines of jsonargparse's messages that repeat what the command line already says.
NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
         "- Expected a <class 'NoneType'>")


def _one_line(e: BaseException) -> str:
    """jsonargparse's message in one line: what it says of the key, without the listing of types
    and values it also prints; an unknown option gets the closest one the class takes."""
    lines = [line.strip() for line in str(e).splitlines()]
    lines = [line.removeprefix("- ") for line in lines if line and not line.startswith(NOISE)]
    message = " ".join(lines) or type(e).__name__
    unknown = re.search(r"class_path '([\w.]+)':.*Option '(\w+)[\w.]*' is not accepted", message)
    return message + (_did_you_mean(unknown.group(2), unknown.group(1)) if unknown else "")


def _did_you_mean(option: str, class_path: str) -> str:
    """``; did you mean 'target'?``: the closest argument of the class, or nothing."""
    try:
        cls = getattr(importlib.import_module(class_path.rpartition(".")[0]), class_path.rpartition(".")[2])
    except (ImportError, AttributeError):
        return ""
    close = difflib.get_close_matches(option, list(inspect.signature(cls.__init__).parameters), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _input_error(e: BaseException) -> InputError | None:
    """The bad-input error behind an exception jsonargparse raised while building a class."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, InputError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def run_lightning_cli(args: list[str]) -> int:
    """Run ``wsl fit|validate|test ARGS``; 0 on success, 2 with one error line on bad input."""
    try:
        if any(a in ("-h", "--help") for a in args):
            _cli(args)  # prints the usage and exits
            return 0
        args = _resolve_config_names(args)
        _check_ckpt_path(args)
        _cli(args)
    except ArgumentError as e:  # a misspelled key, a wrong type, a missing class
        print(f"wsl: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # InputError, or jsonargparse's error around one raised while building a class
        cause = _input_error(e)
        if cause is None:
            raise
        hint = "; point the config at a zoo with --data.zoos PATH" if "zoo file not found" in str(cause) else ""
        print(f"wsl: error: {cause}{hint}", file=sys.stderr)
        return 2
    return 0


class _DropAdvertisement(logging.Filter):
    """Lightning's tip to install a logging service, printed on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _cli(args: list[str]) -> WSLCLI:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropAdvertisement())
    with warnings.catch_warnings():
        for pattern in QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        return WSLCLI(
            WeightSpaceModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
            save_config_kwargs={"overwrite": True}, seed_everything_default=0, parser_kwargs=PARSER_KWARGS,
            trainer_defaults={**TRAINER_DEFAULTS, "max_epochs": 100, "default_root_dir": "runs",
                              "callbacks": [best_checkpoint(), last_checkpoint()]})
