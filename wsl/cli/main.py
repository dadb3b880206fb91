"""The ``wsl`` command: ``wsl zoo generate|info|render|verify|merge|export|subset|import|annotate|phase``, ``wsl fit|validate|test`` (LightningCLI:
predictors, generators, hypernetworks), ``wsl predict``, ``wsl sample``, ``wsl evaluate-generated``,
``wsl merge``, ``wsl hyper search`` and ``wsl demo``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.config import resolve_config
from zoo.errors import InputError


def _zoo_generate(args) -> int:
    from zoo.config import load_config
    from zoo.distributed import run
    from zoo.generate import parse_shard

    config = load_config(resolve_config(args.config))
    run(config, args.out, shard=parse_shard(args.shard), devices=args.devices, num_nodes=args.num_nodes,
        accelerator=args.accelerator, device=args.device, progress=not args.quiet)
    return 0


def _zoo_info(args) -> int:
    from zoo.store import Zoo

    with Zoo(args.file) as z:
        print(z.summary())
        if args.plot:
            from wsl.cli.plots import metric_histogram

            out = metric_histogram(z, args.plot)
            print(f"histogram written to {out}")
    return 0


def _zoo_render(args) -> int:
    from wsl.cli.render import render_inr
    from zoo.store import Zoo

    with Zoo(args.file) as z:
        out = args.out or str(Path(args.file).with_suffix("")) + f".{args.split}.png"
        path, rows, db = render_inr(z, out, n=args.n, split=args.split, checkpoint=args.checkpoint, seed=args.seed)
    print(f"{len(rows)} INRs of split {args.split}: PSNR mean {db.mean():.2f} dB, min {db.min():.2f} dB")
    print(f"rendering written to {path}")
    return 0


def _hyper_search(args) -> int:
    from wsl.hyper.search import run_search

    run_search(args.model, zoo=args.zoo, seeds=args.seeds, steps=args.steps, lr=args.lr, starts=args.starts,
               task=args.task, out=args.out)
    return 0


def _zoo_verify(args) -> int:
    from zoo.verify import verify

    status = 0
    for f in args.files:
        problems = verify(f)
        if problems:
            status = 1
            print(f"{f}: {len(problems)} problem(s)")
            for p in problems[: args.max_problems]:
                print("  " + p)
            if len(problems) > args.max_problems:
                print(f"  ... and {len(problems) - args.max_problems} more")
        else:
            print(f"{f}: OK")
    return status


def _zoo_merge(args) -> int:
    from zoo.merge import merge

    out = merge(args.parts, args.out)
    print(f"merged {len(args.parts)} parts into {out}")
    return 0


def _zoo_export(args) -> int:
    from zoo.export import export_zoo

    done = export_zoo(args.file, args.out, split=args.split, fmt=args.format, checkpoint=args.checkpoint,
                      status=args.status, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"exported {done['runs']} runs at epochs {done['epochs']} to {done['out']}")
    return 0


def _zoo_subset(args) -> int:
    from zoo.subset import subset_zoo

    made = subset_zoo(args.file, args.out, args.where, checkpoint=args.checkpoint, status=args.status,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    print(f"{made['models']} runs of {made['source']} meeting {' and '.join(made['where']) or 'no condition'} "
          f"written to {args.out}")
    return 0


def _zoo_annotate(args) -> int:
    import numpy as np

    from wsl.landscape.annotate import annotate_zoo

    out = annotate_zoo(args.file, hessian=args.hessian, cka=args.cka, checkpoint=args.checkpoint,
                       probes=args.probes, iters=args.iters, examples=args.examples, seed=args.seed,
                       data_dir=args.data_dir, lmc=args.lmc, pairs=args.pairs, points=args.points, log=lambda s: print(s, file=sys.stderr, flush=True))
    for name, v in out.items():
        done = v[~np.isnan(v)]
        print(f"{name}: {len(done)} runs, median {np.median(done):.4g}, range [{done.min():.4g}, {done.max():.4g}]")
    print(f"annotations {', '.join(out)} written to {args.file}")
    return 0


def _zoo_phase(args) -> int:
    import numpy as np

    from wsl.cli.plots import phase_diagram
    from wsl.landscape.phase import describe, format_table, phase_grid, value_label
    from zoo.store import STATUS_DIVERGED, STATUS_PENDING, Zoo

    with Zoo(args.file) as z:
        grid = phase_grid(z, args.x, args.y, args.metric, checkpoint=args.checkpoint, reduce=args.reduce)
        label = describe(z, args.metric, args.checkpoint, args.reduce)
        status = z.status
        lo, hi = int(grid.counts.min()), int(grid.counts.max())
        title = f"{z.name}: {int(grid.counts.sum())} done runs, {lo if lo == hi else f'{lo} to {hi}'} per cell"
    print(f"{label} ({args.y} by {args.x}; each cell: value (runs))")
    print(format_table(grid, args.x, args.y))
    empty = np.argwhere(grid.counts == 0)
    if len(empty):
        cells = ", ".join(f"{args.x}={value_label(grid.x_values[j])} {args.y}={value_label(grid.y_values[i])}"
                          for i, j in empty[:6]) + (", ..." if len(empty) > 6 else "")
        print(f"{len(empty)} of {grid.counts.size} cells have no done run with a value of {args.metric} (blank): "
              f"{cells}; the zoo has {int((status == STATUS_DIVERGED).sum())} diverged and "
              f"{int((status == STATUS_PENDING).sum())} pending runs")
    print(f"phase diagram written to {phase_diagram(grid, args.x, args.y, label, title, args.out, args.color_scale)}")
    return 0


def _zoo_import(args) -> int:
    from wsl.interchange.formats import import_zoo
    from zoo.store import Zoo

    options = _reader_options(args.option)
    options.update({k: v for k, v in (("pattern", args.pattern), ("table", args.table)) if v is not None})
    out = import_zoo(args.sources, args.out, args.format, architecture=args.architecture, activation=args.activation,
                     strict=args.strict, workers=args.workers, progress=not args.quiet, **options)
    with Zoo(out) as z:
        print(z.summary())
    print(f"imported zoo written to {out}")
    return 0


def _reader_options(pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs, each value read as YAML (numbers, lists, strings)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--option {pair!r}: expected KEY=VALUE, e.g. split_index=index.txt")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:  # not YAML (a pattern such as *.pt): the text itself
            options[key.strip()] = value
    return options


def _predict(args) -> int:
    from wsl.prediction.predict import run_predict

    run_predict(args.model, args.inputs, csv_path=args.csv, split=args.split, checkpoint=args.checkpoint,
                max_rows=args.max_rows, activation=args.activation, strict_names=args.strict_names,
                level=args.level, ood_alpha=args.ood_alpha)
    return 0


def _sample(args) -> int:
    from wsl.diffusion.sample import run_sample
    from zoo.store import Zoo

    path = run_sample(args.model, args.num, args.out, args.condition, guidance=args.guidance, seed=args.seed,
                      steps=args.steps, eta=args.eta, data_dir=args.data_dir, device=args.device,
                      overwrite=args.overwrite, log=lambda s: print(s, file=sys.stderr, flush=True))
    with Zoo(path) as z:
        print(z.summary())
    print(f"generated zoo written to {path}")
    return 0


def _numbers(text: str | None, what: str, kind=float) -> list | None:
    """A comma-separated list of numbers (``1,2,3``), or None."""
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what}: expected comma-separated {kind.__name__}s such as 1,2,3, found {text!r}") from None


def _merge(args) -> int:
    from wsl.diffusion.networks import write_generated_zoo
    from wsl.merging.zoo_merge import merge_runs
    from zoo.store import Zoo

    if Path(args.out).exists() and not args.overwrite:
        raise InputError(f"--out {args.out}: the file exists; give --overwrite to replace it (a merged zoo only), "
                         f"or another path")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    m = merge_runs(args.file, args.method, _numbers(args.runs, "--runs", int), checkpoint=args.checkpoint,
                   pretrained=args.pretrained, lam=args.lam, lambdas=_numbers(args.lambdas, "--lambdas"),
                   top_k=args.top_k, p=args.p, dare_merge=args.dare_merge, beta=args.beta, gamma=args.gamma,
                   seed=args.seed, score_on=args.score_on, data_dir=args.data_dir, log=log)
    path = write_generated_zoo(args.out, name=f"{m.config.get('name', 'zoo')}-merged", source_config=m.config,
                               spec=m.wb.spec, task=m.task, wb=m.wb, hparams=m.hparams, generated=m.provenance,
                               checkpoint_epoch=m.checkpoint_epoch, log=log, mark="merged")
    with Zoo(path) as z:
        print(z.summary())
    print(f"merged zoo written to {path}")
    return 0


def _evaluate_generated(args) -> int:
    from wsl.diffusion.memorization import evaluate_generated
    from wsl.diffusion.report import markdown_table

    out_dir = args.out_dir or str(Path(args.generated).with_suffix("")) + ".memorization"
    report = evaluate_generated(args.generated, args.reference, out_dir, seed=args.seed, candidates=args.candidates,
                                max_reference=args.max_reference, data_dir=args.data_dir,
                                log=lambda s: print(s, flush=True))
    print(markdown_table(report))
    print("report written to " + ", ".join(report["files"].values()))
    return 0


def _demo(args) -> int:
    from wsl.cli.demo import run_demo

    run_demo(out_dir=args.out_dir, config=resolve_config(args.config), device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zoo.store import SPLITS  # split names are part of the zoo file's contract

    parser = argparse.ArgumentParser(prog="wsl", description="Weight-space learning: model zoos and learning on weights.")
    sub = parser.add_subparsers(dest="command", required=True)

    zoo = sub.add_parser("zoo", help="generate and inspect model zoos").add_subparsers(dest="zoo_command", required=True)
    g = zoo.add_parser("generate", help="train a zoo from a config (resumes an interrupted run)")
    g.add_argument("config", help="zoo config YAML, or the name of one in configs/zoo/ (e.g. digits_mlp)")
    g.add_argument("--out", help="zoo file (default: zoos/<name>[.shard-i-of-n].h5)")
    g.add_argument("--shard", help="i/n: generate only the i-th of n parts (merge them with 'wsl zoo merge')")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    g.add_argument("--devices", type=int, default=1, metavar="N",
                   help="processes per machine, each training its part of the zoo (Lightning Fabric, DDP; default 1)")
    g.add_argument("--num-nodes", type=int, default=1, metavar="M", help="machines (SLURM, torchrun; default 1)")
    g.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"],
                   help="what each of the --devices processes runs on (default auto: GPUs if any)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_zoo_generate)

    i = zoo.add_parser("info", help="describe a zoo file")
    i.add_argument("file", help="zoo file (.h5) to describe")
    i.add_argument("--plot", metavar="PNG", help="write a histogram of the test metric to this PNG")
    i.set_defaults(func=_zoo_info)

    r = zoo.add_parser("render", help="draw INRs of an INR zoo decoded from their weights beside their signals")
    r.add_argument("file", help="INR zoo file (.h5)")
    r.add_argument("--out", metavar="PNG", help="output image (default: FILE without .h5, plus .<split>.png)")
    r.add_argument("--n", type=int, default=16, help="models drawn, a seeded random sample (default 16)")
    r.add_argument("--split", default="test", choices=[*SPLITS, "all"],
                   help="draw models fitted to this split's signals, or all (default test)")
    r.add_argument("--checkpoint", type=int, default=-1, help="checkpoint position (-1 = last)")
    r.add_argument("--seed", type=int, default=0, help="seed of the sample of models")
    r.set_defaults(func=_zoo_render)

    v = zoo.add_parser("verify", help="check zoo files for truncation and corruption")
    v.add_argument("files", nargs="+", help="zoo files (.h5) to check")
    v.add_argument("--max-problems", type=int, default=50, metavar="N",
                   help="problems listed per file; the rest are counted (default 50)")
    v.set_defaults(func=_zoo_verify)

    m = zoo.add_parser("merge", help="join shard files into one zoo")
    m.add_argument("parts", nargs="+", help="shard files of one zoo (wsl zoo generate --shard i/n)")
    m.add_argument("--out", required=True, help="the merged zoo file to write (.h5); must not exist")
    m.set_defaults(func=_zoo_merge)

    statuses = ["done", "diverged", "pending", "all"]
    x = zoo.add_parser("export", help="write a zoo's runs as plain torch state_dicts (TorchNet names) and CSVs")
    x.add_argument("file", help="zoo file (.h5) to export")
    x.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write (new or empty): zoo.json, runs.csv, metrics.csv, "
                   "run_<index>/epoch_<epoch>.<format>, and signals.safetensors for an INR zoo")
    x.add_argument("--split", default="all", choices=[*SPLITS, "all"],
                   help="only the runs of this recorded split (INR zoos record one; other zoos' splits are "
                   "drawn when training, so only 'all' applies; default all)")
    x.add_argument("--format", default="safetensors", choices=["safetensors", "pt"],
                   help="weight files: safetensors, or pt (a state_dict saved with torch.save; default safetensors)")
    x.add_argument("--checkpoint", default="last", metavar="all|last|EPOCH",
                   help="checkpoints written: every stored one (the initialisation included), the last, or "
                   "one epoch (default last)")
    x.add_argument("--status", default="done", choices=statuses,
                   help="runs of this status (all: every run; diverged and pending runs hold NaN; default done)")
    x.set_defaults(func=_zoo_export)

    s = zoo.add_parser("subset", help="write the runs that meet conditions (metrics, hyperparameters) as a "
                       "zoo of their own")
    s.add_argument("file", help="zoo file (.h5) to cut from")
    s.add_argument("--where", action="append", default=[], metavar="COND",
                   help="a condition every kept run meets: NAME>=X, NAME<=X, NAME>X, NAME<X, NAME=V[,V...] or "
                   "NAME!=V[,V...] on a metric, hyperparameter or signal field, e.g. 'test_acc>=0.9' or "
                   "activation=relu (repeat for several; none: every run of --status)")
    s.add_argument("--checkpoint", type=int, metavar="EPOCH",
                   help="the epoch whose metrics the conditions compare (default: the last stored)")
    s.add_argument("--status", default="done", choices=statuses, help="keep only runs of this status (default done)")
    s.add_argument("--out", required=True, help="the zoo file to write (.h5); must not exist")
    s.set_defaults(func=_zoo_subset)

    an = zoo.add_parser("annotate", help="store each run's loss-landscape figures (Hessian trace and top eigenvalue, "
                        "CKA) in the zoo as /annotations, usable as predictor targets")
    an.add_argument("file", help="zoo file (.h5) to annotate (written in place)")
    an.add_argument("--hessian", action="store_true", help="hessian_trace (Hutchinson) and hessian_top_eig "
                    "(power iteration) of the training loss")
    an.add_argument("--cka", action="store_true", help="cka_mean: linear CKA of the hidden layers with other runs")
    an.add_argument("--lmc", action="store_true", help="linear mode connectivity with partner runs (same "
                    "hyperparameters, other seed; random where none): per pair in /annotations/pairs, per run "
                    "lmc_loss_barrier[_matched], lmc_acc_barrier[_matched] (means over its pairs)")
    an.add_argument("--pairs", type=int, default=2, metavar="K", help="--lmc: partners per run (default 2)")
    an.add_argument("--points", type=int, default=11, help="--lmc: points along each linear path (default 11)")
    an.add_argument("--checkpoint", type=int, default=-1, metavar="POS",
                    help="checkpoint position whose weights are annotated (default -1: the last)")
    an.add_argument("--probes", type=int, default=10, help="Rademacher probes per run for the trace (default 10)")
    an.add_argument("--iters", type=int, default=100, help="most power-iteration steps (default 100)")
    an.add_argument("--examples", type=int, default=256, help="training examples the loss is taken on (default 256)")
    an.add_argument("--seed", type=int, default=0, help="seed of the probes, starts and CKA partners (default 0)")
    an.add_argument("--data-dir", help="where the task's data files are, if elsewhere than when the zoo was made")
    an.set_defaults(func=_zoo_annotate)

    ph = zoo.add_parser("phase", help="a phase diagram: a metric or annotation over a grid of two hyperparameters, "
                        "reduced over each cell's seeds, as a heat map (PNG) and a table")
    ph.add_argument("file", help="zoo file (.h5) over a grid of hyperparameters (e.g. configs/zoo/digits_mlp_phase.yaml)")
    ph.add_argument("--x", required=True, metavar="HPARAM", help="hyperparameter along the x axis, e.g. data_fraction")
    ph.add_argument("--y", required=True, metavar="HPARAM", help="hyperparameter along the y axis, e.g. lr")
    ph.add_argument("--metric", required=True, metavar="NAME",
                    help="what colours the cells: a stored metric (test_acc), an annotation (hessian_trace, "
                    "cka_mean: wsl zoo annotate), a numeric hyperparameter, or acc_gap / loss_gap (train - test "
                    "accuracy, test - train loss)")
    ph.add_argument("--checkpoint", type=int, default=-1, metavar="POS",
                    help="checkpoint position whose metrics are drawn (default -1: the last; annotations keep "
                    "their own)")
    ph.add_argument("--reduce", default="mean", choices=["mean", "median", "std"],
                    help="over the done runs of a cell (default mean)")
    ph.add_argument("--out", required=True, metavar="PNG", help="the heat map to write")
    ph.add_argument("--color-scale", default="auto", choices=["auto", "linear", "log"],
                    help="colours of the heat map: log where the values are positive and span two orders of "
                    "magnitude or more (auto, the default), or as asked")
    ph.set_defaults(func=_zoo_phase)

    im = zoo.add_parser("import", help="read checkpoint folders, exported zoos or the field's public zoos into "
                        "one zoo file (resumes an interrupted import)")
    im.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="folders or files: checkpoints (.pt/.pth/.bin/.safetensors/.ckpt, HF-style folders), a "
                    "'wsl zoo export' folder, or a public zoo's files")
    im.add_argument("--out", required=True, help="the zoo file to write (.h5); must not exist")
    im.add_argument("--format", help="how to read the sources (default: detected; 'folder' when nothing else "
                    "matches); 'folder', 'wsl-export' or a public zoo's format")
    im.add_argument("--pattern", metavar="P",
                    help="folder format: where run and epoch are in each file's path below a source, e.g. "
                    "'{run}/epoch_{epoch}.pt' ('*' matches a name part; default: read from names such as "
                    "epoch=12, epoch_12, checkpoint_000050, step_500)")
    im.add_argument("--table", metavar="FILE",
                    help="folder format: a CSV, JSON or JSONL table of metrics and hyperparameters, its rows keyed "
                    "by a 'file', 'run' or 'run' and 'epoch' column")
    im.add_argument("--architecture", metavar="FILE|NAME",
                    help="the weight space, instead of the one the checkpoints' structure describes: a zoo config "
                    "(YAML, or a shipped name such as digits_mlp) or a YAML with architecture, input_shape, output_dim")
    im.add_argument("--activation", help="the networks' activation (a state_dict does not record it; default: "
                    "each run's where its format records one, else relu with a warning)")
    im.add_argument("--strict", action="store_true",
                    help="refuse the import when a run does not match the weight space (default: skip it and say why)")
    im.add_argument("--workers", type=int, default=1, metavar="N", help="processes reading files (default 1)")
    im.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the format's reader (repeat for several), e.g. split_index=index.txt for "
                    "the Small CNN Zoo or split_points=[45000,50000] for NFN's SIRENs (docs/import-export.md)")
    im.add_argument("--quiet", action="store_true", help="no progress bar")
    im.set_defaults(func=_zoo_import)

    for name, what in (("fit", "train a weight-space model"), ("validate", "evaluate on validation runs"),
                       ("test", "evaluate on test runs")):
        sub.add_parser(name, help=f"{what} (LightningCLI: wsl {name} --config configs/predict/<name>.yaml)",
                       add_help=False)

    from zoo.weight_space import ACTIVATIONS

    p = sub.add_parser("predict", help="predict properties of checkpoint files or zoos with a trained predictor")
    p.add_argument("--model", required=True, help="predictor checkpoint (.ckpt) written by wsl fit")
    p.add_argument("inputs", nargs="+", help=".pt / .safetensors state_dicts, folders of them, or zoo .h5 files")
    p.add_argument("--csv", help="also write every prediction to this CSV file")
    p.add_argument("--split", choices=[*SPLITS, "all"], help="zoo inputs: only this split's runs")
    p.add_argument("--checkpoint", type=int, default=-1, help="zoo inputs: checkpoint position (-1 = last)")
    p.add_argument("--max-rows", type=int, default=20, help="rows printed (all go to --csv; default 20)")
    p.add_argument("--activation", choices=ACTIVATIONS,
                   help="the networks' activation, for file inputs (a state_dict does not record it; default: the "
                   "predictor's); a zoo's own activation is always used, and a predictor trained on another "
                   "activation gets a warning")
    p.add_argument("--strict-names", action="store_true",
                   help="file inputs: accept only the weight space's own parameter names (no matching by structure)")
    p.add_argument("--level", type=float, default=0.9,
                   help="coverage of the conformal intervals (regression) or prediction sets (classification), "
                   "calibrated on the predictor's validation runs (default 0.9)")
    p.add_argument("--ood-alpha", type=float, default=0.01,
                   help="flag inputs whose out-of-distribution p-value is below this (at most this fraction of "
                   "networks like the training zoo's are flagged; default 0.01)")
    p.set_defaults(func=_predict)

    sm = sub.add_parser("sample", help="sample networks from a trained generator into a zoo file (with their metrics)")
    sm.add_argument("--model", required=True, help="generator checkpoint (.ckpt) written by wsl fit (configs/diffusion/)")
    sm.add_argument("--num", type=int, required=True, help="networks to sample")
    sm.add_argument("--out", required=True, help="zoo file to write (.h5); an existing file is refused unless "
                    "--overwrite is given")
    sm.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out file (only a generated zoo: a trained zoo is never replaced)")
    sm.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE",
                    help="a conditional generator's request, e.g. test_acc=0.9, test_acc=0.5:0.95 for values "
                    "evenly spaced over the networks, or label=0,1,2 to cycle through classes (repeat for several "
                    "conditions). Values a property cannot take (an accuracy outside [0, 1]) are refused, values "
                    "outside those of the generator's training runs get a warning. Without it a conditional "
                    "generator samples unconditionally (the model its condition dropout trained), with a warning")
    sm.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1 = none)")
    sm.add_argument("--steps", type=int, help="sampling steps (default: the generator's)")
    sm.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 ancestral (default 0)")
    sm.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    sm.add_argument("--data-dir", help="folder of the task's IDX files, if not where the zoo was made")
    sm.add_argument("--device", default="cpu", help="where the generator runs: cpu, cuda, cuda:1, ... (default cpu)")
    sm.set_defaults(func=_sample)

    e = sub.add_parser("evaluate-generated", help="memorization report of a generated zoo against its reference "
                       "(training) zoo: quality, weight and behavioural novelty, baselines")
    e.add_argument("generated", help="zoo file of generated networks (wsl sample)")
    e.add_argument("--reference", required=True, help="the zoo the generator was trained on")
    e.add_argument("--out-dir", help="report folder (default: GENERATED without .h5, plus .memorization)")
    e.add_argument("--seed", type=int, default=0, help="seed of the baselines and subsets")
    e.add_argument("--candidates", type=int, default=16,
                   help="reference networks aligned by weight matching per network (nearest first; default 16)")
    e.add_argument("--max-reference", type=int, help="at most this many reference networks (a seeded subset)")
    e.add_argument("--data-dir", help="folder of the task's IDX files (MNIST, Fashion-MNIST), if not the stored one")
    e.set_defaults(func=_evaluate_generated)

    mg = sub.add_parser("merge", help="merge runs of a zoo into one network (soups, task arithmetic, TIES, DARE, "
                        "breadcrumbs, aligned averaging), written as a zoo file marked as merged")
    mg.add_argument("file", help="zoo file (.h5) whose runs are merged")
    mg.add_argument("--method", required=True, metavar="METHOD",
                    help="soup | greedy-soup | task-arithmetic | ties | dare | breadcrumbs | aligned-average "
                    "(docs/merging.md)")
    mg.add_argument("--runs", required=True, metavar="R1,R2,...", help="run ids to merge (at least 2), e.g. 1,2,3")
    mg.add_argument("--checkpoint", type=int, default=-1, help="checkpoint position of the runs (-1 = last)")
    mg.add_argument("--pretrained", metavar="RUN|init",
                    help="task-vector methods: the pretrained network, a run (at --checkpoint) or init (the runs' "
                    "shared initialisation, zoos with init: shared)")
    mg.add_argument("--lambda", dest="lam", type=float, metavar="X",
                    help="task-vector methods: the scale of the merged task vector (default: chosen on --lambdas)")
    mg.add_argument("--lambdas", metavar="GRID",
                    help="task-vector methods: comma-separated scales, the best on validation data is kept "
                    "(default 0.05,0.10,...,1.0; ties and dare with --dare-merge ties 0.5,0.6,...,2.0)")
    mg.add_argument("--top-k", type=float, default=0.2,
                    help="ties (and dare with --dare-merge ties): fraction of each task vector's entries kept, by "
                    "magnitude (default 0.2)")
    mg.add_argument("--p", type=float, default=0.5, help="dare: probability of dropping a task-vector entry (default 0.5)")
    mg.add_argument("--dare-merge", default="task-arithmetic", metavar="task-arithmetic|ties",
                    help="dare: how the dropped and rescaled task vectors are merged (default task-arithmetic)")
    mg.add_argument("--beta", type=float, default=0.01,
                    help="breadcrumbs: fraction of largest magnitudes masked per parameter tensor (default 0.01)")
    mg.add_argument("--gamma", type=float, default=0.85,
                    help="breadcrumbs: fraction of smallest magnitudes masked per parameter tensor (default 0.85)")
    mg.add_argument("--seed", type=int, default=0,
                    help="dare: seed of the dropped entries; aligned-average: of weight matching's order (default 0)")
    mg.add_argument("--score-on", default="val", metavar="SPLIT",
                    help="examples that score choices (lambda, greedy soup's ingredients): val (default) or train; "
                    "test is refused")
    mg.add_argument("--data-dir", help="folder of the task's IDX files (MNIST, Fashion-MNIST), if not the stored one")
    mg.add_argument("--out", required=True, help="zoo file to write (.h5); an existing file is refused unless "
                    "--overwrite is given")
    mg.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out file (only a merged zoo: no other zoo is ever replaced)")
    mg.set_defaults(func=_merge)

    h = sub.add_parser("hyper", help="hypernetworks: tune hyperparameters through a trained one")
    hyper = h.add_subparsers(dest="hyper_cmd", required=True)
    hs = hyper.add_parser("search", help="hyperparameters by gradient on the emitted network's validation loss, then "
                          "networks trained directly at them (and the best point of a grid zoo, if given)")
    hs.add_argument("--model", required=True, help="hypernetwork checkpoint (.ckpt) written by wsl fit (configs/hyper/)")
    hs.add_argument("--zoo", help="a zoo over a grid of the same hyperparameters: its best point by validation "
                    "accuracy is reported beside the search")
    hs.add_argument("--seeds", type=int, default=5, help="networks trained directly at the λ found (default 5)")
    hs.add_argument("--steps", type=int, default=300, help="gradient steps on λ (default 300)")
    hs.add_argument("--lr", type=float, default=0.05, help="step size on λ's unit coordinates (default 0.05)")
    hs.add_argument("--starts", type=int, default=8, help="starting points, descended at once (default 8)")
    hs.add_argument("--task", type=int, default=0, help="a hypernetwork over several tasks: the task's index (default 0)")
    hs.add_argument("--out", metavar="JSON", help="also write the report to this file")
    hs.set_defaults(func=_hyper_search)

    d = sub.add_parser("demo", help="generate the demo zoo, train a predictor, predict held-out checkpoints")
    d.add_argument("--out-dir", default="wsl_demo",
                   help="folder of the zoo, predictors, plot and example checkpoints (default wsl_demo; a zoo "
                   "already there is reused or resumed)")
    d.add_argument("--config", default="digits_mlp",
                   help="zoo config YAML, or the name of one in configs/zoo/ (default digits_mlp)")
    d.add_argument("--device", default="auto", help="where the zoo is trained: auto (CUDA if available), cpu, "
                   "cuda, cuda:1, ... (default auto)")
    d.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("fit", "validate", "test"):
        from wsl.cli.lightning import run_lightning_cli

        return run_lightning_cli(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"wsl: error: {e}", file=sys.stderr)
        return 2
