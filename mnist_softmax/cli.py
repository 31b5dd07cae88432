"""Command-line interface: thin click commands over the library. `mnist-softmax --help` lists them."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .config import FRONT_ENDS, SCHEDULES, Config
from .errors import MnistSoftmaxError

DEFAULTS = Config()


class _Group(click.Group):
    """Reports the project's errors (and OS errors such as a full disk) as one line, exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (MnistSoftmaxError, OSError) as e:
            if ctx.params.get("debug"):
                raise
            if isinstance(e, OSError) and not isinstance(e, MnistSoftmaxError):
                e = f"{e.strerror or e}: {e.filename}" if e.filename else str(e)
            raise click.ClickException(str(e)) from None


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


def data_options(f):
    f = click.option(
        "--mirror",
        "mirrors",
        multiple=True,
        metavar="URL_OR_DIR",
        help="Extra MNIST source tried before the defaults (repeatable); a URL, folder or file:// URL. "
        "Also read from $MNIST_SOFTMAX_MIRROR.",
    )(f)
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("data"),
        help="Where the MNIST files are kept.",
    )(f)
    return f


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
    from .data import FILES, ensure_files

    ensure_files(data_dir, mirrors, quiet, log=_err)
    for name in FILES:
        click.echo(f"ok  {data_dir / name}")


def _default(key: str) -> str:
    return f"[default: {getattr(DEFAULTS, key)}, from the config]"


@main.command()
@click.option(
    "--config",
    "config_path",
    metavar="FILE_OR_NAME",
    help="Config TOML file, or the name of a shipped one (e.g. pixels). [default: configs/<features>.toml]",
)
@click.option("--features", type=click.Choice(FRONT_ENDS), help=f"Feature front end. {_default('features')}")
@click.option("--epochs", type=int, help=f"Passes over the training split. {_default('epochs')}")
@click.option("--batch-size", type=int, help=f"Mini-batch size. {_default('batch_size')}")
@click.option("--lr", type=float, help=f"Initial learning rate. {_default('lr')}")
@click.option("--momentum", type=float, help=f"SGD momentum. {_default('momentum')}")
@click.option("--weight-decay", type=float, help=f"L2 penalty on W. {_default('weight_decay')}")
@click.option("--schedule", type=click.Choice(SCHEDULES), help=f"Learning-rate schedule. {_default('schedule')}")
@click.option("--val-size", type=int, help=f"Training images held out for validation. {_default('val_size')}")
@click.option("--seed", type=int, help=f"Seed for the split, the order and any front-end fitting. {_default('seed')}")
@data_options
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder to write. [default: runs/<timestamp>]"
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no per-epoch lines.")
def train(config_path, data_dir, mirrors, out, quiet, **overrides) -> None:
    """Train the T×N softmax layer by mini-batch SGD and write a run folder.

    \b
    Writes model.npz, metrics.csv, summary.json, config.toml, curves.png and
    weights.png, and points runs/latest at the run.

    Example: mnist-softmax train --epochs 5 --lr 0.05 --out runs/quick
    """
    from .config import load_config
    from .data import load_mnist
    from .runs import new_run_dir, save_run
    from .train import fit

    cfg = load_config(config_path, overrides)
    mnist = load_mnist(data_dir, mirrors, quiet, log=_err)
    run_dir = new_run_dir() if out is None else out
    run_dir.mkdir(parents=True, exist_ok=True)

    def report(row: dict) -> None:
        if not quiet:
            click.echo(
                f"epoch {row['epoch']:>3}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  "
                f"{row['seconds']:.2f}s"
            )

    result = fit(cfg, mnist, on_epoch=report, progress=not quiet and sys.stderr.isatty())
    save_run(run_dir, result, cfg)
    click.echo(
        f"test accuracy {result.test_acc:.4f}  test loss {result.test_loss:.4f}  "
        f"({result.seconds:.1f}s, features {cfg.features})\nwrote {run_dir}/"
        " {model.npz, metrics.csv, summary.json, config.toml, curves.png, weights.png}"
    )


if __name__ == "__main__":
    main()
