"""Settings load from file, environment and overrides, and reject impossible values."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import limits
from server.errors import ConfigError
from server.settings import Settings, load_settings


def test_defaults_are_the_embedded_mode() -> None:
    s = load_settings(env={})
    assert s.host == "127.0.0.1"
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.max_upload_bytes == limits.MAX_UPLOAD_BYTES
    assert s.sample_rate == 2.0


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "unmask.toml"
    cfg.write_text('port = 9000\nsample_rate = 1.0\nhost = "0.0.0.0"\n')
    s = load_settings(
        env={"UNMASK_CONFIG": str(cfg), "UNMASK_PORT": "9100"},
        overrides={"sample_rate": 4.0, "host": None},
    )
    assert (s.port, s.sample_rate, s.host) == (9100, 4.0, "0.0.0.0")


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        pytest.param({"UNMASK_PORT": "70000"}, "port", id="port"),
        pytest.param({"UNMASK_PORT": "eighty"}, "port", id="port-not-int"),
        pytest.param({"UNMASK_SAMPLE_RATE": "1000"}, "sample_rate", id="rate"),
        pytest.param({"UNMASK_MAX_UPLOAD_BYTES": "0"}, "max_upload_bytes", id="upload"),
        pytest.param({"UNMASK_DEVICE": "tpu"}, "device", id="device"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env=env)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(env={}, config_file=cfg)


def test_a_renamed_setting_is_an_error_naming_its_new_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'torch_threads' was renamed 'op_threads' \\(UNMASK_OP_THREADS\\)"):
        load_settings(env={"UNMASK_TORCH_THREADS": "1"})
    cfg = tmp_path / "unmask.toml"
    cfg.write_text("torch_threads = 1\n")
    with pytest.raises(ConfigError, match="renamed 'op_threads'"):
        load_settings(env={}, config_file=cfg)
    assert load_settings(env={"UNMASK_OP_THREADS": "1"}).op_threads == 1
