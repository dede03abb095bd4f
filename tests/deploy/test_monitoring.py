"""deploy/monitoring: the alert rules and the dashboard read only metrics that exist: m8's
own (declared in its services' metrics.py and in m8.health) or RabbitMQ's Prometheus
plugin's (the list in deploy/schemas/rabbitmq-prometheus-metrics.txt, with its source)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.kustomize import DEPLOY

ROOT = DEPLOY.parent
MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "m8.rules.yaml"
DASHBOARD = MONITORING / "m8-dashboard.json"

# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up"}
# Used by an alert and a panel, but not exported by m8 yet: deploy/monitoring/README.md
# says what each is and where it belongs. Remove a name here once m8 exports it.
NOT_YET_EXPORTED: set[str] = set()

_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("_count", "_sum", "_created"),
}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def m8_metrics() -> set[str]:
    """The series names m8's prometheus_client metrics export (a Counter `x` as `x_total`
    and `x_created`, a Histogram as `x_bucket`, `x_count`, `x_sum`, `x_created`)."""
    names = set()
    declared = [*ROOT.glob("services/*/src/**/metrics.py"), ROOT / "libs/runtime/src/m8/health.py"]
    for path in sorted(declared):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            kind = node.func.id
            if kind not in _SUFFIXES or not node.args:
                continue
            first = node.args[0]
            assert isinstance(first, ast.Constant), f"{path}: a metric name must be literal"
            name = str(first.value)
            base = name.removesuffix("_total") if kind == "Counter" else name
            names |= {f"{base}{suffix}" for suffix in _SUFFIXES[kind]}
    return names


def rabbitmq_metrics() -> set[str]:
    text = (DEPLOY / "schemas" / "rabbitmq-prometheus-metrics.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (a minimal reading: strings, label
    matchers, ranges and grouping clauses removed; what remains that is not a function
    call or a keyword is a metric)."""
    rest = re.sub(r'"(?:\\.|[^"\\])*"', '""', expression)
    rest = re.sub(r"\{[^}]*\}", " ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = _GROUPING.sub(" ", rest)
    return {
        match.group(1)
        for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", rest)
        if not match.group(2) and match.group(1).lower() not in _KEYWORDS
    }


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} ({target['refId']})": target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def test_the_expression_reader_finds_metrics_and_only_metrics() -> None:
    expression = (
        'sum by (le, store) (rate(m8_x_bucket{result!="ok", q=~"a\\\\.b"}[5m])) '
        "/ on (store) group_left sum(m8_y) > bool 0.5 and up == 0"
    )
    assert metric_names(expression) == {"m8_x_bucket", "m8_y", "up"}


def test_m8s_metrics_are_found_in_its_code() -> None:
    # The reading of metrics.py can fail: these are known to be declared.
    assert {
        "m8_api_requests_total",
        "m8_api_request_duration_seconds_bucket",
        "m8_reactor_uploads_total",
        "m8_reactor_uploads_in_flight",
    } <= m8_metrics()


@pytest.mark.parametrize(
    "expressions", [rule_expressions, dashboard_expressions], ids=["alerts", "dashboard"]
)
def test_every_expression_names_a_metric_m8_or_rabbitmq_exports(
    expressions: object,
) -> None:
    assert callable(expressions)
    known = m8_metrics() | rabbitmq_metrics() | PROMETHEUS_OWN | NOT_YET_EXPORTED
    found = expressions()
    assert found
    unknown = {
        name: sorted(metric_names(expr) - known)
        for name, expr in found.items()
        if metric_names(expr) - known
    }
    assert unknown == {}
    assert all(metric_names(expr) for expr in found.values())


def test_the_metrics_not_exported_yet_are_still_missing_and_documented() -> None:
    # Once m8 exports one, it leaves NOT_YET_EXPORTED (and the README's list).
    assert not NOT_YET_EXPORTED & m8_metrics()
    readme = (MONITORING / "README.md").read_text()
    for name in NOT_YET_EXPORTED:
        assert f"`{name}`" in readme


def test_the_alerts_cover_dead_letters_reactors_pending_uploads_and_relay_lag() -> None:
    alerts = rule_expressions()
    assert "rabbitmq_queue_messages" in metric_names(alerts["M8DeadLetterQueueNotEmpty"])
    assert "m8\\\\.dead\\\\." in alerts["M8DeadLetterQueueNotEmpty"]
    assert "rabbitmq_queue_consumers" in metric_names(alerts["M8ReactorGroupHasNoConsumer"])
    assert metric_names(alerts["M8ReactorDown"]) == {"up"}
    assert metric_names(alerts["M8UploadsPendingTooLong"]) == {
        "m8_uploads_oldest_pending_age_seconds"
    }
    assert metric_names(alerts["M8OutboxRelayLagging"]) == {
        "m8_outbox_oldest_unpublished_age_seconds"
    }


def test_every_alert_says_what_to_do() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["action"], rule["alert"]


def test_the_dashboards_panels_are_distinct_and_queried() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] for panel in dashboard["panels"])


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
