"""The Grafana dashboard (helm/eddy/dashboards/eddy.json) only queries metrics the workers export (issue #6, req. 7).

A renamed or removed metric in ``pipelines/metrics.py`` would otherwise leave a panel silently empty, and a new metric
would never get a panel. The checks here read the dashboard JSON, pull the metric names out of every PromQL
expression (panels, rows, annotations, template variables) and compare them with the sample names that
``WorkerMetrics`` puts on ``/metrics`` — no Grafana or Prometheus needed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from pipelines.metrics import WorkerMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "helm" / "eddy" / "dashboards" / "eddy.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PIPELINE_FILTER = 'pipeline=~"$pipeline"'

# Metric families of WorkerMetrics that deliberately have no panel, with the reason. Empty: every metric is charted.
NO_PANEL_NEEDED: dict[str, str] = {}


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text``: keeps the long name lists below readable."""
    return frozenset(text.split())


# PromQL functions (prometheus/promql/parser/functions.go, up to Prometheus 3.x), including the experimental ones.
PROMQL_FUNCTIONS = _words(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max clamp_min
    cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv
    double_exponential_smoothing exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase info irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
    sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector
    year start end
    """
)
# Aggregation operators: they may be followed by ``by (...)``/``without (...)`` before their parenthesis.
PROMQL_AGGREGATIONS = _words(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio"
)
# Keywords and literals that may stand alone in an expression (matched case-insensitively, as PromQL does).
PROMQL_KEYWORDS = _words("and or unless atan2 bool offset by without on ignoring group_left group_right inf nan")
# Modifiers whose parenthesised argument is a list of label names, not an expression.
LABEL_LIST_MODIFIERS = _words("by without on ignoring group_left group_right")

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[A-Za-z0-9]*)
    | (?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<space>\s+)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)


@dataclass
class Selector:
    """A vector selector in an expression: the metric name and the text of its label matchers (``""`` if none)."""

    metric: str
    matchers: str


@dataclass
class Extraction:
    """What one PromQL expression refers to: vector selectors, functions called, and anything the parser rejected."""

    selectors: list[Selector] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        """Metric names of the selectors, in order of appearance."""
        return [s.metric for s in self.selectors]


class Token(NamedTuple):
    """One lexical token of a PromQL expression: its kind (a named group of ``_TOKEN``), text and offset."""

    kind: str
    text: str
    start: int


def _tokens(expr: str) -> list[Token]:
    """The tokens of ``expr``, whitespace dropped."""
    out: list[Token] = []
    for m in _TOKEN.finditer(expr):
        assert m.lastgroup is not None
        if m.lastgroup != "space":
            out.append(Token(m.lastgroup, m.group(), m.start()))
    return out


def _closing(tokens: list[Token], start: int, close: str) -> int:
    """Index of the first token after ``start`` whose text is ``close``; ``len(tokens)`` when there is none."""
    j = start + 1
    while j < len(tokens) and tokens[j].text != close:
        j += 1
    return j


def extract(expr: str) -> Extraction:
    """Finds the metric names (and functions) a PromQL expression uses.

    Tokenising rather than matching ``eddy_\\w+`` is the point: string literals (``"$pipeline"``), label names in
    ``{...}``, ranges/durations in ``[...]`` and label lists after ``by``/``without``/``on``/``ignoring``/
    ``group_left``/``group_right`` (``le`` in ``by (le, pipeline)``) are skipped; every other identifier must be an
    aggregation operator, a known function (when followed by ``(``), a keyword — or else it is a metric name. So a
    typo'd metric, whatever its prefix, ends up in ``selectors`` and a typo'd function in ``problems``.
    """
    result = Extraction()
    tokens = _tokens(expr)
    depth = 0  # parenthesis depth, to report unbalanced expressions
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if token.text in ("{", "["):  # label matchers, or a range / subquery / duration
            close = "}" if token.text == "{" else "]"
            j = _closing(tokens, i, close)
            if j == len(tokens):
                result.problems.append(f"unclosed {token.text!r}")
            elif token.text == "{":
                matchers = expr[token.start + 1 : tokens[j].start].strip()
                previous = tokens[i - 1] if i > 0 else None
                if previous is not None and result.selectors and result.selectors[-1].metric == previous.text:
                    result.selectors[-1].matchers = matchers
                else:  # {__name__="..."} or a bare matcher set: the metric name is not in the text
                    result.problems.append(f"selector without a metric name: {{{matchers}}}")
            i = j + 1
            continue
        if token.kind == "identifier":
            name = token.text.lower()
            if name in LABEL_LIST_MODIFIERS and following == "(":
                j = _closing(tokens, i + 1, ")")
                if j == len(tokens):
                    result.problems.append(f"unclosed label list of {token.text}")
                odd = [t.text for t in tokens[i + 2 : j] if t.kind != "identifier" and t.text != ","]
                if odd:
                    result.problems.append(f"not label names in the label list of {token.text}: {odd}")
                i = j + 1
                continue
            if name in PROMQL_AGGREGATIONS:
                result.functions.append(name)
            elif following == "(":  # function names are case-sensitive, keywords and aggregations are not
                if token.text in PROMQL_FUNCTIONS:
                    result.functions.append(token.text)
                else:
                    result.problems.append(f"unknown PromQL function {token.text}()")
            elif name not in PROMQL_KEYWORDS:
                result.selectors.append(Selector(token.text, ""))
        elif token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
            if depth < 0:
                result.problems.append("unbalanced ')'")
                depth = 0
        elif token.text in ("}", "]"):
            result.problems.append(f"unbalanced {token.text!r}")
        i += 1
    if depth:
        result.problems.append("unbalanced '('")
    return result


def check_expression(expr: str, exported: set[str]) -> list[str]:
    """Everything wrong with one expression against the exported sample names; empty when it is fine.

    Unknown metric names come with their closest exported names, so a typo points at its fix.
    """
    found = extract(expr)
    problems = list(found.problems)
    if not found.selectors:
        problems.append("names no metric")
    for metric in found.metrics:
        if metric not in exported:
            close = difflib.get_close_matches(metric, sorted(exported), n=3, cutoff=0.6)
            problems.append(f"unknown metric {metric} (close matches: {', '.join(close) or 'none'})")
    return problems


def variable_query_exprs(query: str) -> list[str]:
    """The PromQL inside a Prometheus template-variable query (Grafana's ``label_values``/``query_result`` syntax).

    ``label_values(expr, label)`` takes a selector and a label name, and the label name must not be read as a metric.
    Other forms (``label_names()``, ``metrics(regex)``) name no metric; they are rejected so that this test learns
    about them instead of skipping them.
    """
    query = query.strip()
    if m := re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query, re.DOTALL):
        return [m.group(1)]
    if m := re.fullmatch(r"query_result\((.*)\)", query, re.DOTALL):
        return [m.group(1)]
    raise AssertionError(f"template variable query this test cannot read: {query!r}")


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a row holds (collapsed rows keep theirs under ``panels``)."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def panel_levels(panels: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The lists of panels that share one grid: the top level, and the panels inside each (collapsed) row."""
    yield panels
    for panel in panels:
        if panel.get("panels"):
            yield from panel_levels(panel["panels"])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(where, PromQL, needs the pipeline filter) for every query of the dashboard.

    Panel targets and annotations must filter on ``$pipeline``; template-variable queries produce its values.
    """
    for panel in walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"], True
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("datasource", {}).get("type") == "prometheus":
            yield f"annotation {annotation['name']!r}", annotation["expr"], True
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        queries = [variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]]
        queries += [variable["definition"]] if variable.get("definition") else []
        for query in queries:
            for expr in variable_query_exprs(query):
                yield f"variable {variable['name']!r}", expr, False


def sample_names(name: str, kind: str) -> set[str]:
    """The sample names prometheus_client exposes for a family of ``kind`` named ``name`` (OpenMetrics types)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    assert kind in suffixes, f"metric type {kind} of {name}: teach sample_names() its sample names"
    return {name + suffix for suffix in suffixes[kind]}


def exported_families() -> dict[str, set[str]]:
    """Family name → sample names, for every metric on a fresh ``WorkerMetrics().registry``.

    ``registry.collect()`` yields labelled metrics before any child exists (with no samples): the family list is
    complete on a fresh instance, and the sample names follow from each family's type.
    """
    return {family.name: sample_names(family.name, family.type) for family in WorkerMetrics().registry.collect()}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The dashboard JSON as Grafana loads it."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name a worker can put on ``/metrics``."""
    return set().union(*exported_families().values())


def test_exported_names_match_what_a_worker_exposes() -> None:
    """The name rules of ``sample_names`` and the "families without children" assumption hold for WorkerMetrics.

    Touches one child of every metric, renders ``/metrics`` and parses it back: the derived names must equal the
    exposed ones. Also every metric attribute is on the registry and is labelled by ``pipeline`` first, which is what
    lets every panel filter on ``$pipeline``.
    """
    metrics = WorkerMetrics()
    wrappers = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    collected = {family.name: family for family in metrics.registry.collect()}
    assert {family.name for w in wrappers for family in w.describe()} == set(collected)
    assert all(not family.samples for family in collected.values()), "families are listed before any child exists"
    derived = set().union(*(sample_names(f.name, f.type) for f in collected.values()))
    for wrapper in wrappers:
        labelnames = wrapper._labelnames
        assert labelnames[:1] == ("pipeline",), f"{wrapper._name}: labels {labelnames} must start with pipeline"
        wrapper.labels(*["x"] * len(labelnames))
    exposed = {
        sample.name
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    assert exposed == derived
    assert exported_families() == {name: sample_names(f.name, f.type) for name, f in collected.items()}


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any], exported: set[str]) -> None:
    """Each panel has a query; each query names at least one metric, and only metrics a worker exports."""
    problems: list[str] = []
    for panel in walk_panels(dashboard["panels"]):
        if panel["type"] != "row" and not panel.get("targets"):
            problems.append(f"panel {panel.get('title')!r}: no targets")
    for where, expr, _ in dashboard_queries(dashboard):
        problems += [f"{where}: {problem} in {expr!r}" for problem in check_expression(expr, exported)]
    assert not problems, "\n".join(problems)


def test_panel_and_annotation_queries_filter_on_the_pipeline_variable(dashboard: dict[str, Any]) -> None:
    """Every selector of a panel or annotation is narrowed to ``$pipeline``, and every series is labelled by it."""
    problems: list[str] = []
    for where, expr, needs_filter in dashboard_queries(dashboard):
        for selector in extract(expr).selectors:
            if needs_filter and PIPELINE_FILTER not in selector.matchers.replace(" ", ""):
                problems.append(f"{where}: {selector.metric} lacks {PIPELINE_FILTER}")
    for panel in walk_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"panel {panel['title']!r}: datasource {panel.get('datasource')} is not {DATASOURCE}")
        for target in panel["targets"]:
            if target.get("datasource") != DATASOURCE:
                problems.append(f"panel {panel['title']!r} target {target['refId']}: datasource is not {DATASOURCE}")
            if "{{pipeline}}" not in target.get("legendFormat", "") and panel.get("repeat") != "pipeline":
                problems.append(f"panel {panel['title']!r} target {target['refId']}: legend does not name the pipeline")
    assert not problems, "\n".join(problems)


def test_every_exported_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    """A metric added to WorkerMetrics needs a panel (or an entry in ``NO_PANEL_NEEDED`` saying why not)."""
    used = {
        metric
        for panel in walk_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        for metric in extract(target["expr"]).metrics
    }
    families = exported_families()
    assert set(NO_PANEL_NEEDED) <= set(families), "NO_PANEL_NEEDED names metrics WorkerMetrics no longer has"
    missing = sorted(name for name, samples in families.items() if not samples & used and name not in NO_PANEL_NEEDED)
    assert not missing, f"metrics with no panel in {DASHBOARD.name}: {missing}"


def test_dashboard_identity_and_variables(dashboard: dict[str, Any]) -> None:
    """The uid/title docker-compose and links rely on, and the two template variables every panel uses."""
    assert dashboard["uid"] == "eddy-pipelines"
    assert dashboard["title"] == "Eddy pipelines"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    pipeline = variables["pipeline"]
    assert pipeline["type"] == "query" and pipeline["multi"] and pipeline["includeAll"]
    assert pipeline["definition"] == "label_values(eddy_events_in_total, pipeline)"


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    """Grafana keys panels by id, and overlapping gridPos rectangles get shuffled around on load."""
    ids = [panel["id"] for panel in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    problems: list[str] = []
    for level in panel_levels(dashboard["panels"]):
        for panel in level:
            pos = panel["gridPos"]
            if not (pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0 and pos["x"] + pos["w"] <= 24):
                problems.append(f"panel {panel['title']!r}: gridPos {pos} is off the 24-column grid")
        for a, b in combinations(level, 2):
            pa, pb = a["gridPos"], b["gridPos"]
            if (
                pa["x"] < pb["x"] + pb["w"]
                and pb["x"] < pa["x"] + pa["w"]
                and pa["y"] < pb["y"] + pb["h"]
                and pb["y"] < pa["y"] + pa["h"]
            ):
                problems.append(f"panels {a['title']!r} {pa} and {b['title']!r} {pb} overlap")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('rate(eddy_event_in_total{pipeline=~"$pipeline"}[5m])', "unknown metric eddy_event_in_total"),
        ("rate(http_requests_total[5m])", "unknown metric http_requests_total"),
        ("sum by (pipeline) (eddy_consumer_lags)", "close matches: eddy_consumer_lag"),
        ("rat(eddy_events_in_total[1m])", "unknown PromQL function rat()"),
        ('sum by (pipeline) (rate(eddy_events_in_total{pipeline="x"}[1m])', "unbalanced '('"),
        ('{__name__="eddy_events_in_total"}', "selector without a metric name"),
        ("sum(rate(eddy_events_in_total[1m])) * 60", None),
    ],
)
def test_the_checker_reports_wrong_expressions(expr: str, expected: str | None, exported: set[str]) -> None:
    """The checker can fail: typo'd metrics (of any prefix) and functions, and unparseable expressions are reported."""
    problems = check_expression(expr, exported)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems


def test_extract_skips_label_names_strings_ranges_and_variables() -> None:
    """Label names in ``by (...)``/``{...}``, matcher values, durations and Grafana variables are not metrics."""
    expr = (
        'histogram_quantile(0.99, sum by (le, pipeline) (rate(eddy_event_latency_seconds_bucket{pipeline=~"$pipeline",'
        ' le!="+Inf"}[$__rate_interval]))) / on (pipeline) group_left (output) max without (topic) '
        "(eddy_consumer_lag offset 5m) > bool 1e3 unless sum(eddy_stall_seconds) by (partition)"
    )
    found = extract(expr)
    assert found.problems == []
    assert found.metrics == ["eddy_event_latency_seconds_bucket", "eddy_consumer_lag", "eddy_stall_seconds"]
    assert found.selectors[0].matchers == 'pipeline=~"$pipeline", le!="+Inf"'
    assert variable_query_exprs("label_values(eddy_events_in_total, pipeline)") == ["eddy_events_in_total"]


def test_walk_panels_sees_panels_in_collapsed_rows() -> None:
    """Collapsed rows keep their panels nested; those must be checked too."""
    panels = [
        {"id": 1, "type": "row", "collapsed": True, "panels": [{"id": 2, "type": "timeseries"}]},
        {"id": 3, "type": "timeseries"},
    ]
    assert [p["id"] for p in walk_panels(panels)] == [1, 2, 3]
    assert [[p["id"] for p in level] for level in panel_levels(panels)] == [[1, 3], [2]]
