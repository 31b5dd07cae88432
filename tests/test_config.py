"""Config: shipped files match the dataclass, flags override files, bad keys and values are refused."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mnist_softmax.config import Config, load_config, make_config, shipped_config, to_toml
from mnist_softmax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_pixels_toml_is_the_dataclass_default_and_lists_every_key():
    values = tomllib.loads((CONFIGS / "pixels.toml").read_text())
    assert set(values) == {f.name for f in dataclasses.fields(Config)}
    assert load_config(CONFIGS / "pixels.toml") == Config()
    assert load_config() == Config()


def test_shipped_configs_are_installed_with_the_package():
    for path in CONFIGS.glob("*.toml"):
        assert shipped_config(path.stem).read_text() == path.read_text()
    assert load_config("pixels") == Config()


def test_flags_override_the_file_and_none_means_not_given():
    cfg = load_config(None, {"lr": 0.5, "epochs": None, "batch_size": 32})
    assert cfg.lr == 0.5 and cfg.batch_size == 32 and cfg.epochs == Config().epochs


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert make_config({"lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        make_config({"epochs": 2.5})
    with pytest.raises(ConfigError, match="'seed' must be int, got bool"):
        make_config({"seed": True})


def test_unknown_keys_are_rejected_naming_them(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key in .*c\.toml: learning_rate"):
        load_config(p)


@pytest.mark.parametrize(
    "values,key",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"val_size": 60000}, "val_size"),
        ({"val_size": -1}, "val_size"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"schedule": "linear"}, "schedule"),
        ({"features": "resnet"}, "features"),
        ({"standardize": "zca"}, "standardize"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_key(values, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        make_config(values)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"conv_kernel": 1}, r"'conv_kernel' must be in \[3, 15\], got 1"),
        ({"conv_kernel": 4}, "'conv_kernel' must be odd"),
        ({"conv_patches": 10**12}, r"'conv_patches' must be in \[1000, 300000\]"),
        ({"std_floor": 0.0}, r"'std_floor' must be in \[1e-06, 1000\]"),
        ({"std_floor": 1e-40}, "'std_floor' must be in"),
        ({"lr": 1e41}, r"'lr' must be in \(0, 1e\+40\], got 1e\+41"),
        ({"seed": 2**63}, r"'seed' must be in \[0, 9223372036854775807\]"),
        ({"conv_kmeans_iters": 1000}, "'conv_kmeans_iters' must be in"),
        ({"weight_decay": 1e308}, r"'weight_decay' must be in \[0, 1\]"),
        ({"batch_size": 10**9}, "'batch_size' must be in"),
        ({"epochs": 10**7}, "'epochs' must be in"),
        ({"lr": float("inf")}, "'lr' must be in \\(0, 1e\\+40\\]"),
        ({"seed": -1}, "'seed' must be in"),
        ({"lr_gamma": 0.0}, "'lr_gamma' must be in"),
        ({"conv_whiten_eps": 0.0}, "'conv_whiten_eps' must be in"),
    ],
)
def test_values_the_code_cannot_honour_are_refused_up_front(values, message):
    with pytest.raises(ConfigError, match=message):
        make_config(values)


def test_every_numeric_key_has_a_range():
    from mnist_softmax.config import RANGES

    numeric = {f.name for f in dataclasses.fields(Config) if type(getattr(Config(), f.name)) in (int, float)}
    assert numeric == set(RANGES)
    for key, (low, high, *_) in RANGES.items():
        assert low <= getattr(Config(), key) <= high, key


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    p = tmp_path / "bad.toml"
    p.write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_to_toml_round_trips(tmp_path):
    cfg = make_config({"lr": 1e-5, "epochs": 3, "schedule": "step", "weight_decay": 0.0})
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg


def test_a_config_nested_too_deeply_is_one_error(tmp_path):
    p = tmp_path / "deep.toml"
    p.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply|not valid TOML"):
        load_config(p)
