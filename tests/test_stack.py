"""The deployment agrees with the code: serverless.yml as written, and the CloudFormation template it generates.

Two views of the stack. ``serverless`` is serverless.yml read with its CloudFormation short tags kept as
``{"!Tag": value}``: what the file says. ``template`` is what ``serverless package`` writes (variables
resolved, the Lambda's own resources added): what CloudFormation would deploy. ``scripts/check_infra.sh``
runs this file with ``BOOTSTRAPPER_CFN_TEMPLATE`` naming each template it generated; without it the
template is packaged here when ``infra/node_modules`` holds the Serverless Framework, else those tests skip.

The retry rules are checked by evaluating them as AWS Batch does (``batch_retry_action``), not by their
spelling. Not here: cfn-lint (check_infra.sh), or anything deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.batch_job import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_RETRY,
    array_request,
    report_request,
)
from tests.pipeline_helpers import REPO

TEMPLATE_ENV = "BOOTSTRAPPER_CFN_TEMPLATE"
SERVERLESS = REPO / "infra" / "node_modules" / ".bin" / "serverless"
IMAGE_TAG = "0000000"  # what a deploy passes as --param="imageTag=<git sha>"; check_infra.sh passes this one too


# --- AWS Batch's reading of evaluateOnExit -------------------------------------------------------


def _matches(pattern: str, value: str) -> bool:
    # Batch's patterns match exactly, or by prefix when they end in "*" (the only wildcard they may hold).
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def batch_retry_action(rules: Sequence[Mapping[str, str]], *, exit_code: int | None = None, reason: str = "",
                       status_reason: str = "") -> str:
    """RETRY or EXIT: what AWS Batch does with a failed attempt under a job definition's ``EvaluateOnExit``.

    As the Batch API reference (``EvaluateOnExit``) puts it: the first rule whose every condition matches
    decides; the exit code is matched as its decimal string; a failure no rule matches is retried. A value
    the attempt does not have (no exit code after a Spot interruption) counts as the empty string, which
    only ``*`` matches.

    >>> batch_retry_action([{"OnExitCode": "1", "Action": "EXIT"}], exit_code=137)
    'RETRY'
    """
    seen = {"OnExitCode": "" if exit_code is None else str(exit_code), "OnReason": reason,
            "OnStatusReason": status_reason}
    for rule in rules:
        conditions = {k: v for k, v in rule.items() if k != "Action"}
        if all(_matches(pattern, seen[k]) for k, pattern in conditions.items()):
            return rule["Action"].upper()
    return "RETRY"


# --- the two views of the stack ------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """Reads serverless.yml: CloudFormation short tags (!Ref, !If, ...) become {"!Tag": value}."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {f"!{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def serverless() -> dict[str, Any]:
    return yaml.load((REPO / "serverless.yml").read_text(encoding="utf-8"), Loader=_CfnLoader)


def package_template(out: Path) -> dict[str, Any]:
    """``serverless package`` into ``out``, offline: dummy credentials, no telemetry (as check_infra.sh does)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
           "AWS_SESSION_TOKEN": "", "AWS_EC2_METADATA_DISABLED": "true", "SLS_TELEMETRY_DISABLED": "1",
           "SLS_NOTIFICATIONS_MODE": "off", "SLS_DEPRECATION_DISABLE": "*"}
    done = subprocess.run([str(SERVERLESS), "package", "--package", str(out), f"--param=imageTag={IMAGE_TAG}"],
                          cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "cloudformation-template-update-stack.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.environ.get(TEMPLATE_ENV):
        return json.loads(Path(os.environ[TEMPLATE_ENV]).read_text(encoding="utf-8"))
    if not SERVERLESS.exists() or shutil.which("node") is None:
        pytest.skip(f"no Serverless Framework in {SERVERLESS.parent} (npm ci --prefix infra); "
                    f"scripts/check_infra.sh runs these tests on the template it generates")
    return package_template(tmp_path_factory.mktemp("serverless-package"))


def _job_definition(resources: Mapping[str, Any]) -> dict[str, Any]:
    return dict(resources["JobDefinition"]["Properties"])


# --- retry rules ---------------------------------------------------------------------------------

SPOT = {"status_reason": "Your Spot Task was interrupted."}
OOM = {"exit_code": 137, "reason": "OutOfMemoryError: Container killed due to memory usage",
       "status_reason": "Essential container in task exited"}
EXITED = "Essential container in task exited"
FAILURES = [
    ("spot-interrupted-no-exit-code", SPOT, "RETRY"),
    ("resource-initialization", {"status_reason": "ResourceInitializationError: unable to pull secrets or "
                                                  "registry auth: execution resource retrieval failed"}, "RETRY"),
    ("cannot-pull-container", {"reason": "CannotPullContainerError: pull image manifest has been retried 5 "
                                         "time(s): failed to resolve ref"}, "RETRY"),
    ("task-failed-to-start", {"status_reason": "Task failed to start"}, "RETRY"),
    ("ec2-host-terminated", {"status_reason": "Host EC2 (instance i-0123456789abcdef0) terminated."}, "RETRY"),
    ("exit-1-failed", {"exit_code": EXIT_FAILED, "status_reason": EXITED}, "EXIT"),
    ("exit-2-config", {"exit_code": EXIT_CONFIG, "status_reason": EXITED}, "EXIT"),
    ("exit-3-stopped-state-saved", {"exit_code": EXIT_RETRY, "status_reason": EXITED}, "RETRY"),
    ("exit-137-sigkill", {"exit_code": 137, "status_reason": EXITED}, "RETRY"),
    ("exit-12-not-1", {"exit_code": 12, "status_reason": EXITED}, "RETRY"),
    ("out-of-memory", OOM, "EXIT"),
    ("out-of-memory-as-status-reason", {"exit_code": 137, "status_reason": "OutOfMemoryError: Container killed "
                                                                           "due to memory usage"}, "EXIT"),
]


def test_the_evaluator_reproduces_the_catch_all_that_stopped_spot_interruptions() -> None:
    """The rules before this change: a trailing ``OnReason "*" -> EXIT`` ended every Spot interruption."""
    old = [{"OnReason": "OutOfMemoryError*", "Action": "EXIT"}, {"OnStatusReason": "Host EC2*", "Action": "RETRY"},
           {"OnExitCode": "3", "Action": "RETRY"}, {"OnExitCode": "137", "Action": "RETRY"},
           {"OnReason": "*", "Action": "EXIT"}]
    assert batch_retry_action(old, **SPOT) == "EXIT"
    assert batch_retry_action(old, exit_code=3) == "RETRY"


@pytest.mark.parametrize(("failure", "action"), [(f, a) for _, f, a in FAILURES], ids=[i for i, _, _ in FAILURES])
def test_serverless_yml_retries_what_another_attempt_can_fix(serverless: dict[str, Any], failure: dict[str, Any],
                                                             action: str) -> None:
    rules = _job_definition(serverless["resources"]["Resources"])["RetryStrategy"]["EvaluateOnExit"]
    assert len(rules) <= 5, "Batch allows at most 5 rules"
    assert batch_retry_action(rules, **failure) == action


@pytest.mark.parametrize(("failure", "action"), [(f, a) for _, f, a in FAILURES], ids=[i for i, _, _ in FAILURES])
def test_generated_template_retries_what_another_attempt_can_fix(template: dict[str, Any], failure: dict[str, Any],
                                                                 action: str) -> None:
    strategy = _job_definition(template["Resources"])["RetryStrategy"]
    assert isinstance(strategy["Attempts"], int) and strategy["Attempts"] > 1, "no retry without attempts > 1"
    assert batch_retry_action(strategy["EvaluateOnExit"], **failure) == action


def test_the_job_stops_itself_a_margin_before_its_timeout(serverless: dict[str, Any],
                                                           template: dict[str, Any]) -> None:
    """Batch never retries a job its timeout killed: the job gets its deadline, the timeout less the margin."""
    from handlers.batch_job import DEADLINE_ENV

    definition = _job_definition(template["Resources"])
    timeout = definition["Timeout"]["AttemptDurationSeconds"]
    margin = serverless["params"]["default"]["stopMarginSeconds"]
    env = {e["Name"]: e["Value"] for e in definition["ContainerProperties"]["Environment"]}
    assert env[DEADLINE_ENV] == str(timeout - margin)
    assert margin >= 60, "time for the last safe point, saving the state, and the exit"


# --- commands, environment and the trigger -------------------------------------------------------


def test_job_definition_command_and_image_entry_point_parse(serverless: dict[str, Any]) -> None:
    from handlers.batch_job import build_parser

    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    entry = json.loads(dockerfile.split("\nENTRYPOINT ", 1)[1].splitlines()[0])
    default_cmd = json.loads(dockerfile.split("\nCMD ", 1)[1].splitlines()[0])
    assert entry == ["python", "-m", "handlers.batch_job"]
    container = _job_definition(serverless["resources"]["Resources"])["ContainerProperties"]
    for command in (default_cmd, container["Command"], array_request("s3://b/k.yaml", 2, "q", "d")
                    ["containerOverrides"]["command"],
                    report_request("s3://b/k.yaml", 2, "q", "d", "a-1")["containerOverrides"]["command"]):
        build_parser().parse_args(command)  # argparse exits on a command it does not accept
    assert container["Command"] == ["run", "Ref::config_uri"]
    env = {e["Name"] for e in container["Environment"]}
    assert "BOOTSTRAPPER_JOB_DEFINITION" in env
    assert {s["Name"] for s in container["Secrets"]} == {"BOOTSTRAPPER_API__LARGE_API_KEY",
                                                         "BOOTSTRAPPER_API__SMALL_API_KEY"}


def test_trigger_function_matches_the_handler(serverless: dict[str, Any]) -> None:
    from handlers import s3_trigger

    fn = serverless["functions"]["trigger"]
    module, _, attr = fn["handler"].rpartition(".")
    assert module.replace("/", ".") == s3_trigger.__name__ and callable(getattr(s3_trigger, attr))
    assert set(fn["environment"]) == {s3_trigger.QUEUE_ENV, s3_trigger.DEFINITION_ENV}
    (event,) = fn["events"]
    assert event["s3"]["rules"] == [{"prefix": s3_trigger.JOBS_PREFIX}, {"suffix": s3_trigger.CONFIG_NAME}]
    statements = serverless["provider"]["iam"]["role"]["statements"]
    actions = [([s["Action"]] if isinstance(s["Action"], str) else s["Action"], s["Resource"]) for s in statements]
    s3_resources = [resource for names, resource in actions if any(a.startswith("s3:") for a in names)]
    assert s3_resources, "the trigger writes its markers"
    assert all(r.endswith(f"/{s3_trigger.MARKER_PREFIX}*") for r in s3_resources), "and nothing else in the bucket"


def test_a_trigger_event_is_retried_then_kept_never_dropped(template: dict[str, Any]) -> None:
    from handlers import s3_trigger

    resources = template["Resources"]
    (config,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert config["FunctionName"] == {"Ref": "TriggerLambdaFunction"} and config["MaximumRetryAttempts"] == 2
    queue = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert queue == {"Fn::GetAtt": ["TriggerFailureQueue", "Arn"]}
    assert resources["TriggerFailureQueue"]["Type"] == "AWS::SQS::Queue"
    statements = resources["IamRoleLambdaExecution"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue} in statements

    timeout = resources["TriggerLambdaFunction"]["Properties"]["Timeout"]
    # A claim is taken over only once its invocation is surely dead, and by Lambda's second retry at the latest
    # (it comes 1 + 2 minutes after the first failure).
    assert 2 * timeout <= s3_trigger.RECLAIM_AFTER_S <= 60 + 120
    # One client call, retries and standard mode's backoff (at most 2**i s before retry i) included, fits too.
    attempts = s3_trigger.MAX_ATTEMPTS
    worst = attempts * (s3_trigger.CONNECT_TIMEOUT_S + s3_trigger.READ_TIMEOUT_S) + sum(2**i for i in range(attempts - 1))
    assert worst < timeout / 2, worst


# --- what an operator needs of the stack ---------------------------------------------------------


def _env(definition: Mapping[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in definition["ContainerProperties"]["Environment"]}


def _resources(definition: Mapping[str, Any]) -> dict[str, str]:
    return {r["Type"]: r["Value"] for r in definition["ContainerProperties"]["ResourceRequirements"]}


def _both_definitions(resources: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run (and array) job's definition, and the report job's."""
    return _job_definition(resources), dict(resources["ReportJobDefinition"]["Properties"])


def test_the_bucket_outlives_the_stack_and_its_name_is_per_stage(serverless: dict[str, Any],
                                                                template: dict[str, Any]) -> None:
    bucket = template["Resources"]["S3BucketJobs"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    assert bucket["Properties"]["BucketName"] == serverless["params"]["dev"]["bucketName"]
    assert "bucketName" not in serverless["params"]["default"], "a stage without its own bucket name fails"


def test_jobs_log_to_their_own_group_with_a_retention(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    group = resources["JobLogGroup"]["Properties"]
    assert isinstance(group["RetentionInDays"], int) and group["RetentionInDays"] > 0
    for definition in _both_definitions(resources):
        config = definition["ContainerProperties"]["LogConfiguration"]
        assert config["LogDriver"] == "awslogs" and config["Options"]["awslogs-group"] == {"Ref": "JobLogGroup"}


def test_every_job_runs_the_image_tag_it_was_deployed_with(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["ImageRepository"]["Properties"]["ImageTagMutability"] == "IMMUTABLE"
    for definition in _both_definitions(resources):
        image = definition["ContainerProperties"]["Image"]
        assert image == {"Fn::Join": [":", [{"Fn::GetAtt": ["ImageRepository", "RepositoryUri"]}, IMAGE_TAG]]}


def test_the_report_job_has_its_own_smaller_definition(template: dict[str, Any]) -> None:
    from handlers.batch_job import REPORT_DEFINITION_ENV

    resources = template["Resources"]
    job, report = _both_definitions(resources)
    assert _env(job)[REPORT_DEFINITION_ENV] == report["JobDefinitionName"]
    assert float(_resources(report)["VCPU"]) < float(_resources(job)["VCPU"])
    assert int(_resources(report)["MEMORY"]) < int(_resources(job)["MEMORY"])
    assert report["RetryStrategy"] == job["RetryStrategy"]
    assert "Secrets" not in report["ContainerProperties"], "counting predictions calls no LLM"
    statements = resources["JobRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (submit,) = [s for s in statements if s["Action"] == "batch:SubmitJob"]
    allowed = json.dumps(submit["Resource"])
    assert f"job-definition/{report['JobDefinitionName']}:*" in allowed


def test_torch_uses_the_vcpus_each_job_has(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for definition in _both_definitions(resources):
        assert _env(definition)["BOOTSTRAPPER_SYSTEM__TORCH_THREADS"] == _resources(definition)["VCPU"]
