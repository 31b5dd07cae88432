"""Command-line interface: thin click commands over the library. `mnist-softmax --help` lists them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import FEATURE_NAMES, SCHEDULES, Config, load_config
from .errors import MnistSoftmaxError, exit_code
from .signals import handle_sigterm
from .text import escape_controls, path_text, shown

DEFAULTS = Config()
DATA_DIR = Path("data")  # --data-dir's default
SHIPPED = {name: load_config(name) for name in FEATURE_NAMES}  # configs/<features>.toml, for --help


class _Group(click.Group):
    """Reports the project's errors (and OS errors such as a full disk) as one line, exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            if ctx.params.get("debug"):
                raise
            click.echo("interrupted", err=True)
            ctx.exit(exit_code(e))
        except BrokenPipeError:
            # The reader went away (`… | head -1`): stop quietly, as a shell tool does. Later writes
            # to stdout, and the interpreter's final flush, go to /dev/null instead of failing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except (MnistSoftmaxError, OSError) as e:
            if ctx.params.get("debug"):
                raise
            if isinstance(e, OSError) and not isinstance(e, MnistSoftmaxError):
                e = f"{e.strerror or e}: {shown(e.filename)}" if e.filename else str(e)
            # Messages may carry a user's file names: escape what could break or forge a line.
            lines = path_text(str(e)).split("\n")  # paths in messages are shown(); this guards the rest
            raise click.ClickException("\n".join(escape_controls(line) for line in lines)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mnist-softmax")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Softmax classification on MNIST with nothing but NumPy.

    \b
    Quick start:
      mnist-softmax train                  # download MNIST, train, write runs/<timestamp>/
      mnist-softmax train --epochs 5 --lr 0.05
    """
    handle_sigterm()  # (installed already by the `mnist-softmax` command; here for callers of main)


def run() -> None:
    """The `mnist-softmax` command: main, then Ctrl-C and SIGTERM ignored while the interpreter
    exits. The command's work is done and said by then; a late signal (a held-down Ctrl-C) would
    only turn a clean exit into a traceback from the interpreter's shutdown."""
    import signal
    import threading

    try:
        main()
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


class _OneLineUsageError(click.UsageError):
    """A usage error (exit code 2) shown as its one `Error: …` line, without the usage text."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class NonEmptyPath(click.Path):
    """click.Path that refuses an empty string, which would otherwise quietly mean the current folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            name = param.opts[0] if param is not None and param.opts and param.opts[0].startswith("-") else "a path"
            raise _OneLineUsageError(f"{name} is empty; give a file or folder name")
        return super().convert(value, param, ctx)


data_dir_option = click.option(
    "--data-dir",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    default=DATA_DIR,
    help="Where the MNIST files (and the feature cache, in cache/) are kept.",
)


def data_options(f):
    f = click.option(
        "--mirror",
        "mirrors",
        multiple=True,
        metavar="URL_OR_DIR",
        help="Extra MNIST source tried before the defaults (repeatable); a URL, folder or file:// URL. "
        "Also read from $MNIST_SOFTMAX_MIRROR.",
    )(f)
    return data_dir_option(f)


def _bars(quiet: bool) -> bool:
    """Progress bars only for a person at a terminal: not with --quiet, nor when output is redirected."""
    return not quiet and sys.stdout.isatty() and sys.stderr.isatty()


def _err(msg: str) -> None:
    click.echo(msg, err=True)


@main.command()
@data_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def download(data_dir: Path, mirrors: tuple[str, ...], quiet: bool) -> None:
    """Fetch and verify the four MNIST files without training.

    A file already present with the right SHA-256 is not fetched again.

    Example: mnist-softmax download --mirror ./my-mnist-copy
    """
    from .download import FILES, ensure_files

    ensure_files(data_dir, mirrors, quiet, log=_err)
    for name in FILES:
        click.echo(f"ok  {shown(data_dir / name)}")


@main.command("cache")
@data_dir_option
@click.option("--clear", is_flag=True, help="Remove every cached file.")
def cache_cmd(data_dir: Path, clear: bool) -> None:
    """List the feature cache (DATA_DIR/cache/): each file, its size and what made it.

    Conv features of the 70,000 images are kept there, 878 MB for each seed and conv setting, so
    a second run or an eval does not compute them again. Any of it can be deleted at any time:
    it is computed again when needed. --clear removes it all.

    Example: mnist-softmax cache --clear
    """
    from . import cache
    from .fileio import remove_stale_temps

    folder = data_dir / "cache"
    stale = remove_stale_temps(folder)
    if stale:
        click.echo(f"removed {len(stale)} temp file{'s' * (len(stale) != 1)} left by runs that were killed")
    if clear:
        n, freed = cache.clear(folder)
        click.echo(f"removed {n} file{'s' * (n != 1)} ({freed / 1e6:,.1f} MB) from {shown(folder)}/")
        return
    entries = cache.entries(folder)
    for e in entries:
        made = ", ".join(f"{k} {v}" for k, v in e.about.items() if k not in ("crc32", "rows")) or "unknown origin"
        click.echo(f"{shown(e.path)}  {e.bytes / 1e6:,.1f} MB  {escape_controls(made)}")
    total = sum(e.bytes for e in entries)
    click.echo(
        f"{len(entries)} cached feature file{'s' * (len(entries) != 1)}, {total / 1e6:,.1f} MB in {shown(folder)}/"
    )


def _default(key: str) -> str:
    """A train option's default: the config's value, given per front end where their configs differ."""
    values = {name: getattr(cfg, key) for name, cfg in SHIPPED.items()}
    if key == "features":
        return f"[default: {DEFAULTS.features}, from the config]"
    if len(set(values.values())) == 1:
        return f"[default: {values[DEFAULTS.features]}, from the config]"
    return "[default: from the config: " + ", ".join(f"{v} for {name}" for name, v in values.items()) + "]"


@main.command()
@click.option(
    "--config",
    "config_path",
    metavar="FILE_OR_NAME",
    help="Config TOML file, or the name of a shipped one (e.g. pixels). [default: configs/<features>.toml]",
)
@click.option("--features", type=click.Choice(FEATURE_NAMES), help=f"Feature front end. {_default('features')}")
@click.option("--epochs", type=int, help=f"Passes over the training split. {_default('epochs')}")
@click.option("--batch-size", type=int, help=f"Mini-batch size. {_default('batch_size')}")
@click.option("--lr", type=float, help=f"Learning rate (first epoch's, or the one-cycle peak). {_default('lr')}")
@click.option("--momentum", type=float, help=f"SGD momentum. {_default('momentum')}")
@click.option(
    "--weight-decay",
    type=float,
    help=f"L2 penalty on W (and a cnn's kernels), never biases. {_default('weight_decay')}",
)
@click.option("--schedule", type=click.Choice(SCHEDULES), help=f"Learning-rate schedule. {_default('schedule')}")
@click.option("--val-size", type=int, help=f"Training images held out for validation. {_default('val_size')}")
@click.option("--seed", type=int, help=f"Seed for the split, the order and any front-end fitting. {_default('seed')}")
@click.option(
    "--shift",
    type=int,
    help=f"cnn only: move each training image by up to this many pixels, at random, every epoch. {_default('shift')}",
)
@data_options
@click.option(
    "--out", type=NonEmptyPath(file_okay=False, path_type=Path), help="Run folder to write. [default: runs/<timestamp>]"
)
@click.option(
    "--resume",
    type=NonEmptyPath(exists=True, file_okay=False, path_type=Path),
    help="Continue the interrupted run in RUN_DIR (its own recipe), to the same result as an uninterrupted run.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no per-epoch lines.")
def train(config_path, data_dir, mirrors, out, resume, quiet, **overrides) -> None:
    """Train the T×N softmax layer (with the cnn front end: the network too) by SGD; write a run folder.

    \b
    Writes model.npz, metrics.csv, summary.json, config.toml, curves.png and
    weights.png, and points runs/latest at the run if it is in runs/ (a run
    written elsewhere with --out leaves runs/latest alone).

    Example: mnist-softmax train --epochs 5 --lr 0.05 --out runs/quick
    """
    from .data import load_mnist
    from .training_run import complete_saved_run, train_run

    if resume is not None and (config_path or out or any(v is not None for v in overrides.values())):
        raise click.UsageError("--resume continues a run with its own recipe and folder; drop other options")
    completed = complete_saved_run(resume) if resume is not None else None
    if completed is not None:
        result, cfg, written = completed
        click.echo(
            f"the run in {shown(resume)}/ had finished training; wrote what its folder lacked: {', '.join(written)}"
        )
        click.echo(f"test accuracy {result.test_acc:.4f}  test loss {result.test_loss:.4f}  (features {cfg.features})")
        return
    cfg, state = _recipe(config_path, overrides, resume)
    on_epoch = (lambda row: None) if quiet else (lambda row: click.echo(_epoch_line(row)))
    train_run(
        cfg, state, lambda: load_mnist(data_dir, mirrors, quiet, log=_err), out, resume, data_dir / "cache",
        _data_flags(data_dir, mirrors), on_epoch, lambda result, run_dir: _report(result, run_dir, cfg), _err,
        _bars(quiet),
    )  # fmt: skip


def _report(result, run_dir: Path, cfg: Config) -> None:
    """What train prints once the run is saved: the test scores, the files, and a warning for a run
    that learned next to nothing, naming its likely cause."""
    from .model import N_CLASSES
    from .train import near_chance_cause

    click.echo(
        f"test accuracy {result.test_acc:.4f}  test loss {result.test_loss:.4f}  "
        f"({result.seconds:.1f}s, features {cfg.features})\nwrote {shown(run_dir)}/"
        " {model.npz, metrics.csv, summary.json, config.toml, curves.png, weights.png}"
    )
    if result.test_acc < 2 / N_CLASSES:  # a model that predicts (nearly) one class: a run gone wrong
        _err(
            f"warning: test accuracy {result.test_acc:.4f} is near chance ({1 / N_CLASSES:.1f}): the model"
            f" learned next to nothing; {near_chance_cause(result, cfg.lr)}"
        )


def _data_flags(data_dir: Path, mirrors: tuple[str, ...]) -> str:
    """The --data-dir and --mirror flags a later command needs to find the same data, as text."""
    from .sources import redact

    where = "".join(f" --mirror {shown(redact(m))}" for m in mirrors)
    return f" --data-dir {shown(data_dir)}{where}" if data_dir != DATA_DIR else where


def _recipe(config_path, overrides: dict, resume: Path | None):
    """(Config, TrainState or None): from the config file and flags, or from the run to resume."""
    from .config import load_config, make_config

    if resume is None:
        return load_config(config_path, overrides), None
    from .checkpoint import load_train_state

    values, state = load_train_state(resume / "model.npz")
    return make_config(values, source=str(resume / "model.npz")), state


def _epoch_line(row: dict) -> str:
    return (
        f"epoch {row['epoch']:>3}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  {row['seconds']:.2f}s"
    )


def checkpoint_option(f):
    return click.option(
        "--checkpoint",
        type=NonEmptyPath(exists=True, dir_okay=False, path_type=Path),
        help="A model.npz written by train. [default: runs/latest/model.npz]",
    )(f)


@main.command("eval")
@checkpoint_option
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", help="Which images to score.")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--out", type=NonEmptyPath(file_okay=False, path_type=Path), help="Also write confusion.png, errors.png.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_cmd(checkpoint, split, data_dir, mirrors, as_json, out, quiet) -> None:
    """Score a checkpoint: accuracy, loss, per-class precision/recall/F1, confusion matrix.

    The val and train splits are the ones the checkpoint was trained with (same seed and size).

    Example: mnist-softmax eval --checkpoint runs/latest/model.npz --split test --out report/
    """
    from .api import load_model
    from .data import load_mnist
    from .display import json_text, score_record, score_table
    from .runs import latest_checkpoint
    from .scoring import score_split

    path = checkpoint or latest_checkpoint()
    model, cfg, _, version = load_model(path)
    mnist = load_mnist(data_dir, mirrors, quiet, log=_err)
    s, images, labels = score_split(model, cfg, mnist, split, data_dir / "cache", _bars(quiet), version)
    if as_json:
        click.echo(json_text({"checkpoint": path_text(path), "split": split, **score_record(s)}))
    else:
        click.echo(f"checkpoint {shown(path)} ({model.front_end}, N = {model.W.shape[1]})   split {split}")
        click.echo(score_table(s))
    if out is not None:  # after the scores: whatever happens to the figures, the scores are out
        from . import plots
        from .scoring import most_confident_errors

        out.mkdir(parents=True, exist_ok=True)
        title = f"{shown(path)} on {split} (accuracy {s.accuracy:.2%})"  # control characters escaped
        plots.plot_confusion(out / "confusion.png", s.confusion, title)
        plots.plot_errors(
            out / "errors.png", images, labels, s.probabilities, most_confident_errors(s.probabilities, labels, 32)
        )
        if not as_json:
            click.echo(f"wrote {shown(out)}/confusion.png, {shown(out)}/errors.png")


@main.command()
@click.argument("images", nargs=-1, required=True, type=NonEmptyPath(path_type=Path))
@checkpoint_option
@click.option("--top-k", type=click.IntRange(1, 10), help="Show only the K most probable classes.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per image.")
@click.option("--explain", is_flag=True, help="Walk through the computation: features, logits, exp, sum, p.")
@click.option(
    "--label",
    type=click.IntRange(0, 9),
    help="The true digit: each image's softmax loss −log p(label) is shown (in --explain's walk-through, with it).",
)
@click.option("--show-input", is_flag=True, help="Print the 28×28 image the model saw, as ASCII art.")
@click.option(
    "--save-input",
    type=NonEmptyPath(file_okay=False, path_type=Path),
    help="Write it to DIR/<name>.png (<name>-2.png, … if taken: never over a file).",
)
def predict(images, checkpoint, top_k, as_json, explain, label, show_input, save_input) -> None:
    """Classify your own digit images (files or folders) and print the class probabilities.

    Images are turned upright by their EXIF orientation and normalised the way MNIST was made:
    ink told from its background (either polarity, even when the digit fills the frame), cropped,
    scaled to a 20-pixel box and centred by mass in 28×28. A file that cannot be read or holds no
    digit (a speck, a line, a blank page) gets an error line; the others are still classified,
    and the exit code is 1.

    Example: mnist-softmax predict my-digit.jpg --explain --label 7
    """
    from .api import load_model
    from .images import image_files
    from .predict import predict_files
    from .runs import latest_checkpoint

    model = load_model(checkpoint or latest_checkpoint()).model
    if save_input is not None:
        save_input.mkdir(parents=True, exist_ok=True)
    files, failed = [], 0
    for path in images:
        found = image_files([path])
        if path.is_dir() and not found:
            _err(f"error: {shown(path)}: no image files in this folder")
            failed += 1
        files += found
    for result in predict_files(model, files, explain, label):
        failed += not _show_prediction(result, top_k, as_json, show_input, save_input)
    if failed:
        raise SystemExit(1)


def _show_prediction(result, top_k, as_json: bool, show_input: bool, save_input: Path | None) -> bool:
    """Print one image's prediction (and save its input image), or its error: whether all went well."""
    from .display import json_text, prediction_record, prediction_text
    from .errors import ImageError
    from .predict import save_input_image

    if isinstance(result, ImageError):
        _err(f"error: {escape_controls(path_text(str(result)))}")
        return False
    saved, ok = None, True
    if save_input is not None:
        try:
            saved = save_input_image(save_input, result)
        except OSError as e:  # this image's copy is lost, not the rest of the run
            why = e.strerror or e
            _err(f"error: {shown(result.path)}: could not save its input image in {shown(save_input)} ({why})")
            ok = False
    if as_json:
        click.echo(json_text(prediction_record(result, top_k) | ({"saved_input": path_text(saved)} if saved else {})))
    else:
        click.echo(prediction_text(result, top_k, show_input) + (f"\n  saved as {shown(saved)}" if saved else ""))
    return ok


@main.command()
@checkpoint_option
@data_dir_option
@click.option(
    "--host",
    default="127.0.0.1",
    help="Address to listen on. 0.0.0.0 serves other machines too: the page has no login.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port to listen on; 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser.")
def serve(checkpoint, data_dir, host, port, no_browser) -> None:
    """Put the lesson on a local page: draw a digit and see it become features, logits,
    probabilities and a loss, with the model's real numbers; take a learning step on it.

    \b
    The page needs nothing but this server: no internet. The run's test scores
    come from the MNIST test set in --data-dir, when it is there. Ctrl-C stops it.

    Example: mnist-softmax serve --checkpoint runs/latest/model.npz --port 8000
    """
    import threading

    from threadpoolctl import threadpool_limits

    from .runs import latest_checkpoint
    from .serve import App, has_display, is_loopback, make_server, serve_workers

    host = host.strip().removeprefix("[").removesuffix("]")
    if not host:
        raise click.UsageError("--host is empty; give an address, such as 127.0.0.1 (this machine only) or 0.0.0.0")
    app = App(checkpoint or latest_checkpoint(), data_dir)
    server = make_server(app, host, port)
    threadpool_limits(1)  # each request on a core of its own: the requests at once are the parallelism
    app.start(workers=serve_workers())
    try:
        click.echo(f"serving {shown(app.path)} at {server.url} (Ctrl-C stops it)")
        if not is_loopback(host):
            _err(f"warning: listening on {host}: anyone who can reach this machine can use the page; it has no login")
        if not no_browser and has_display():
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt as e:
        _err("stopped")
        raise SystemExit(exit_code(e)) from None
    finally:
        server.server_close()
        app.close()


@main.command()
@checkpoint_option
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="File format.")
@click.argument("out", metavar="OUT", type=NonEmptyPath())  # a str, as given: export's own checks say what is wrong
def export(checkpoint, fmt, out) -> None:
    """Write a checkpoint as a standard model file, for use outside this project.

    \b
    ONNX (opset 17): input "digits", a batch of 28×28 digits in MNIST form as
    floats in [0, 1] (batch, 1, 28, 28); outputs "logits" = x·Wᵀ + b and
    "probabilities"; the front end, the standardiser and W inside. Needs the
    onnx package: pip install 'mnist-softmax[export]'. docs/export.md.

    Example: mnist-softmax export --checkpoint runs/latest/model.npz --format onnx model.onnx
    """
    from .api import export_onnx
    from .runs import latest_checkpoint

    path = checkpoint or latest_checkpoint()
    written = export_onnx(path, out)
    click.echo(f"wrote {shown(written)} (ONNX, opset 17) from {shown(path)}")


if __name__ == "__main__":
    main()
