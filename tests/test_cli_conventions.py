"""CLI conventions a new user expects: --version, logging options on either side of the subcommand, the log
format from the environment, ``init`` -> ``plan``, and the example's stand-in models refused without their URL."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from handlers.cli import build_parser
from handlers.init_config import PROVIDERS
from handlers.wiring import ColourFormatter, load_job
from tests.fixtures.llm_server import shared_data_dir
from tests.pipeline_helpers import REPO, sample_rows


def _bootstrapper(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as typed (no --json-logs added), with no provider key in the environment unless given."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith(("BOOTSTRAPPER_", "AWS_"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true", **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "handlers.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_version() -> None:
    from importlib.metadata import version

    result = _bootstrapper(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"bootstrapper {version('classifier-bootstrapper')}"


@pytest.mark.parametrize("argv,json_logs,level", [
    (["status", "out"], False, "info"),
    (["status", "out", "--json-logs", "--log-level", "debug"], True, "debug"),
    (["--json-logs", "--log-level", "warning", "status", "out"], True, "warning"),
    (["--log-level", "error", "run", "c.yaml", "--restart"], False, "error"),
], ids=["defaults", "after", "before", "before-kept"])
def test_logging_options_on_either_side_of_the_subcommand(argv: list[str], json_logs: bool, level: str) -> None:
    args = build_parser().parse_args(argv)
    assert (args.json_logs, args.log_level) == (json_logs, level)


def test_log_format_from_the_environment_and_a_bad_one_is_a_config_error(tmp_path: Path) -> None:
    # Not a terminal (captured): JSON by default; BOOTSTRAPPER_LOG_FORMAT=plain gives plain lines.
    status = ["status", str(tmp_path / "nothing-here")]
    as_json = _bootstrapper(status).stderr.strip().splitlines()
    assert json.loads(as_json[0])["level"] == "ERROR"
    plain = _bootstrapper(status, {"BOOTSTRAPPER_LOG_FORMAT": "plain"}).stderr.strip().splitlines()
    assert " ERROR " in plain[0] and not plain[0].startswith("{")
    bad = _bootstrapper(status, {"BOOTSTRAPPER_LOG_FORMAT": "yaml"})
    assert bad.returncode == 2 and "BOOTSTRAPPER_LOG_FORMAT" in bad.stderr


def test_colour_only_marks_warnings_and_errors() -> None:
    record = logging.LogRecord("bootstrapper", logging.WARNING, __file__, 1, "careful", None, None)
    info = logging.LogRecord("bootstrapper", logging.INFO, __file__, 1, "fine", None, None)
    coloured = ColourFormatter(colour=True)
    assert coloured.format(record).startswith("\033[33m") and coloured.format(record).endswith("\033[0m")
    assert "\033" not in coloured.format(info)
    assert "\033" not in ColourFormatter(colour=False).format(record)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_init_writes_a_config_each_provider_loads(tmp_path: Path, provider: str) -> None:
    result = _bootstrapper(["init", str(tmp_path / "proj"), "--provider", provider])
    assert result.returncode == 0, result.stderr
    config = tmp_path / "proj" / "config.yaml"
    assert (tmp_path / "proj" / "input").is_dir()
    assert f"bootstrapper plan {config}" in result.stdout
    job = load_job(str(config), {})
    assert job.settings.api.large_model == PROVIDERS[provider].large
    assert job.input_uri == str(tmp_path / "proj" / "input")
    again = _bootstrapper(["init", str(tmp_path / "proj")])
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert yaml.safe_load(config.read_text())["api"]["small_model"] == PROVIDERS[provider].small


def test_init_then_plan_names_the_missing_key_then_plans(tmp_path: Path) -> None:
    assert _bootstrapper(["init", str(tmp_path), "--provider", "anthropic"]).returncode == 0
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 50)
    (tmp_path / "input" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = str(tmp_path / "config.yaml")
    missing = _bootstrapper(["plan", config])
    assert missing.returncode == 2 and "$ANTHROPIC_API_KEY" in missing.stderr
    planned = _bootstrapper(["plan", config], {"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key"})
    assert planned.returncode == 0, planned.stderr
    assert "anthropic/claude-haiku-4-5" in planned.stdout and "Plan for 50 chunks" in planned.stdout


def test_the_examples_stand_in_models_without_their_url_are_a_config_error(tmp_path: Path) -> None:
    """``openai/oracle-*`` with no base URL would go to OpenAI itself with a model that does not exist there."""
    rows = sample_rows(shared_data_dir() / "sms_spam.jsonl", 20)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"classification": {"classes": ["ham", "spam"], "desc": "sms"},
                                      "path": {"input": "in", "output": "out"}}))
    for command in ("plan", "run"):
        result = _bootstrapper([command, str(config)], {"OPENAI_API_KEY": "sk-not-a-real-key"})
        assert result.returncode == 2, result.stderr
        assert "api.large_model" in result.stderr and "stand-in" in result.stderr
    assert not (tmp_path / "out").exists()
    with_url = _bootstrapper(["plan", str(config)], {"BOOTSTRAPPER_API__LARGE_BASE_URL": "http://127.0.0.1:9/v1",
                                                     "BOOTSTRAPPER_API__SMALL_BASE_URL": "http://127.0.0.1:9/v1"})
    assert with_url.returncode == 0, with_url.stderr
