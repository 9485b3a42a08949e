"""`ltkd train teacher|student`: one training run, without Ray."""
from __future__ import annotations

import argparse
import sys

from orchestrator.cli import known
from trainables.config import AMP_MODES, DEVICES, TEACHER_CACHE_DTYPES, TEACHER_CACHE_MODES
from trainables.data.sources import DATASETS
from trainables.errors import UserError
from trainables.methods import METHODS

# Convenience flags for the hyperparameters the paper searches; anything else goes through --set.
HPARAM_FLAGS = {"alpha": "alpha", "beta": "beta", "temperature": "temperature", "groups": "n_groups"}


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()  # a choice such as within_norm=mean: the method's hyperparameter check decides


def method_overrides(args: argparse.Namespace) -> dict:
    from trainables.methods import get_method

    method = get_method(getattr(args, "method", "ce"))
    overrides = {}
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise UserError(f"--set expects NAME=VALUE, got '{item}'")
        name, value = item.split("=", 1)
        overrides[name.strip()] = _parse_value(value)
    # The named flags win over --set: a `ltkd best` file spells every hyperparameter as --set, and
    # `--config FILE --alpha 2` means alpha 2.
    for flag, name in HPARAM_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            knob = method.knob_for(name)  # --temperature sets DIST's tau (declared as its alias)
            overrides[knob.name if knob is not None else name] = value
    return overrides


def run_config_from_args(args: argparse.Namespace, role: str):
    from trainables.config import RunConfig

    return RunConfig(
        dataset=args.dataset, root=args.root, imbalance_factor=args.imbalance_factor, data_seed=args.data_seed,
        validation_per_class=getattr(args, "validation_per_class", None),
        role=role, arch=args.arch, method=getattr(args, "method", "ce"),
        hparams=method_overrides(args), teacher=getattr(args, "teacher", None),
        teacher_arch=getattr(args, "teacher_arch", None), seed=args.seed, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, device=args.device, amp=args.amp,
        teacher_cache=getattr(args, "teacher_cache", "auto"),
        teacher_cache_dtype=getattr(args, "teacher_cache_dtype", "float32"), test_every=getattr(args, "test_every", 1),
        checkpoint_every_seconds=getattr(args, "checkpoint_every_seconds", None),
        deterministic=getattr(args, "deterministic", False),
    )


def check_out_folder(out: str) -> None:
    """--out names a folder, existing or not, that can be made: not a file, nor inside one."""
    from pathlib import Path

    path = Path(out).expanduser()
    if str(out).strip() == "":
        raise UserError("--out is empty; pass the run folder, e.g. --out runs/teacher")
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                what = "a file" if candidate.is_file() else "not a folder"
                where = f"is {what}" if candidate == path else f"is inside {candidate}, which is {what}"
                raise UserError(f"--out {out} {where}; --out must be a folder (the run folder): "
                                "pass a new or existing folder")
            return


def cmd_train(args: argparse.Namespace) -> int:
    from trainables.config import (check_checkpoint_every_seconds, check_device, check_imbalance_factor,
                                   check_test_every, check_validation_per_class)
    from trainables.data.sources import get_dataset
    from trainables.engine import fit
    from trainables.run_files import TrainLog
    from trainables.tracking import TensorBoardLog

    from orchestrator.train_file import args_from_file, best_file_of, teacher_files

    if getattr(args, "config", None):  # a `ltkd best` file's run, the flags given beside it laid over it
        args = args_from_file(args, args.argv)
    if getattr(args, "print_config", False):
        get_dataset(args.dataset)
        print(best_file_of(run_config_from_args(args, args.role).resolved().to_dict(), args.out), end="")
        return 0
    if args.out is None:
        raise UserError("--out is missing; pass the run folder, e.g. --out runs/student (or --config FILE, "
                        "whose command names one)")
    # The flags first, named as typed; then every setting checked, all before any work.
    check_out_folder(args.out)
    check_device(args.device, "--device")
    check_test_every(args.test_every, "--test-every")
    check_checkpoint_every_seconds(args.checkpoint_every_seconds, "--checkpoint-every-seconds")
    get_dataset(args.dataset)
    check_validation_per_class(args.dataset, args.validation_per_class, "--validation-per-class")
    check_imbalance_factor(args.dataset, args.imbalance_factor, "--imbalance-factor",
                           validation_per_class=args.validation_per_class)
    requested = run_config_from_args(args, args.role)
    config = requested.resolved()
    teacher_path = teacher_files(config.teacher, getattr(args, "from_cell", None))
    tensorboard = TensorBoardLog(args.out)
    warned = []

    def on_epoch(metrics, checkpoint) -> None:
        if not warned:  # once every input has been checked: a refused run prints its one error line alone
            warned.append(_warn_guessed_defaults(requested))
        tensorboard.epoch(metrics)

    try:  # lines printed and kept in the run's train.log; each epoch's metrics in its TensorBoard events too
        result = fit(config, args.out, log=TrainLog(args.out, echo=print), teacher_path=teacher_path,
                     callback=on_epoch)
    finally:
        tensorboard.close()
    m = result.metrics
    val = f"  val acc {m['val_acc']:.2f}" if m.get("val_acc") is not None else ""
    print(f"done: {result.checkpoint}  acc {m['acc']:.2f}  head {m['acc_head']:.2f}  "
          f"medium {m['acc_medium']:.2f}  tail {m['acc_tail']:.2f}{val}")
    return 0


def _warn_guessed_defaults(requested) -> None:
    from trainables.methods import get_method

    warning = get_method(requested.method).guessed_defaults_warning(requested.dataset, requested.hparams)
    if warning:
        print(f"ltkd: warning: {warning}", file=sys.stderr)


def _common_options(parser: argparse.ArgumentParser, default_arch: str) -> None:
    parser.add_argument("--dataset", default="digits", help=f"one of {known(DATASETS)} (default digits)")
    parser.add_argument("--root", default=None, help="folder holding the dataset (not needed for digits)")
    parser.add_argument("--imbalance-factor", type=float, default=100.0, help="gamma, >= 1 (default 100)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the validation split and the long-tailed subsample (default 0)")
    parser.add_argument("--validation-per-class", type=int, default=None, metavar="N",
                        help="images per class held out of the training pool as the balanced validation split, "
                        "before the long-tailed subsample (default: the dataset's: cifar100 50, tinyimagenet 50, "
                        "imagenet 20, digits 10; 0 = none, the paper's protocol and counts)")
    parser.add_argument("--arch", default=default_arch, help=f"architecture (default {default_arch}; `ltkd list "
                        "models` lists them)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's (240 CIFAR, 100 ImageNet, 12 digits)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--device", default="auto", help=f"one of {DEVICES} (auto: CUDA when present, as cuda:N "
                        "of the current device)")
    parser.add_argument("--amp", default="auto", choices=AMP_MODES,
                        help="mixed precision on CUDA (losses always run in float32)")
    parser.add_argument("--test-every", type=int, default=1, metavar="K",
                        help="evaluate the test set every K epochs and at the last (default 1); the validation "
                        "split is evaluated every epoch")
    parser.add_argument("--checkpoint-every-seconds", type=float, default=None, metavar="S",
                        help="checkpoint after an epoch once S seconds have passed since the last checkpoint, and "
                        "after the last epoch (0: every epoch; default: every epoch on a CPU, 60 on a GPU); a "
                        "crash loses at most S seconds of training")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels (cuDNN without autotuning, a fixed cuBLAS workspace): the same "
                        "run on the same hardware gives the same weights; slower on a GPU")
    parser.add_argument("--out", default=None, help="run folder (required): checkpoint.pt, run.json, "
                        "metrics.jsonl; an unfinished run of the same config there is resumed")


def add_commands(commands) -> None:
    train = commands.add_parser("train", help="train one teacher or student, without Ray")
    train.set_defaults(help_parser=train)
    roles = train.add_subparsers(dest="role", metavar="ROLE")
    teacher = roles.add_parser("teacher", help="cross-entropy on the long-tailed training set")
    _common_options(teacher, "resnet32x4")
    teacher.set_defaults(handler=cmd_train, role="teacher")

    student = roles.add_parser("student", help="distil a student from a teacher checkpoint")
    _common_options(student, "resnet8x4")
    student.add_argument("--method", default="ltkd", help=f"one of {known(METHODS)} (default ltkd)")
    student.add_argument("--teacher", default=None, help="teacher run folder (or its checkpoint.pt)")
    student.add_argument("--teacher-arch", default=None, help="check that the teacher checkpoint is this architecture")
    student.add_argument("--alpha", type=float, default=None, help="LTKD/DKD alpha")
    student.add_argument("--beta", type=float, default=None, help="LTKD/DKD beta")
    student.add_argument("--temperature", type=float, default=None, help="distillation temperature")
    student.add_argument("--groups", type=int, default=None, help="LTKD: number of class groups")
    student.add_argument("--teacher-cache", default="auto", choices=TEACHER_CACHE_MODES,
                         help="teacher-logit cache for logit methods on in-memory data (CIFAR-style, digits): "
                         "auto (default) reads an existing cache, or builds one when the run has at least as "
                         "many epochs left as views per image (162 for CIFAR: a 240-epoch run builds it, a "
                         "short one runs the live teacher); on: always (the build runs the teacher over every "
                         "view once, hours on a CPU, minutes on a GPU); off: the live teacher")
    student.add_argument("--teacher-cache-dtype", default="float32", choices=TEACHER_CACHE_DTYPES,
                         help="how the cache stores the teacher's logits: float32 (default) or float16 (half the "
                         "size; logits rounded to a relative 2^-11)")
    student.add_argument("--set", action="append", metavar="NAME=VALUE",
                         help="any other method hyperparameter, e.g. --set rebalance=false --set ce_weight=0.5")
    student.add_argument("--config", default=None, metavar="FILE", help="train the run a `ltkd best` file (TOML "
                         "or JSON) describes, its teacher read from the sweep's storage; flags given beside it "
                         "override the file's")
    student.add_argument("--cell", default=None, metavar="TEXT", help="with --config: the cell whose key contains "
                         "TEXT (needed when the file holds several)")
    student.add_argument("--print-config", action="store_true", help="print the run the flags describe as a "
                         "`ltkd best` file (for --config) and exit")
    student.set_defaults(handler=cmd_train, role="student")
