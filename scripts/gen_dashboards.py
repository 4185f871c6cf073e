#!/usr/bin/env python3
"""Generates driftd's Grafana dashboards (dashboards/*.json) from one description.

Why a script: the three dashboards share the datasource variable, the state codes and their
colours, and panel boilerplate; writing them once here keeps them consistent. The JSON it
writes is committed, so Grafana provisioning needs no build step.

    python3 scripts/gen_dashboards.py          # rewrite dashboards/*.json
    python3 scripts/gen_dashboards.py --check  # exit 1 if the committed JSON is not what this writes

Only the Python standard library is used. The queries use the metric names of the README's
metrics reference; tests/it/dashboards_e2e.rs runs every one against a real Prometheus.
"""

import json
import sys
from pathlib import Path

SCHEMA_VERSION = 41  # Grafana 12's classic dashboard JSON model
DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = Path(__file__).resolve().parent.parent / "dashboards"

# One number per state, worst highest, so max by (…) gives the worst: the gate's order.
STATE_CODES = [("pass", 1), ("insufficient", 2), ("warn", 3), ("fail", 4)]
CONTAINED_CODE = 5
STATE_COLOURS = {
    "pass": "green",
    "insufficient": "blue",
    "warn": "orange",
    "fail": "red",
    "contained": "purple",
}


def state_mappings():
    """Value mappings from the state codes to their names and colours."""
    options = {
        str(code): {"text": name, "color": STATE_COLOURS[name], "index": i}
        for i, (name, code) in enumerate(STATE_CODES)
    }
    options[str(CONTAINED_CODE)] = {
        "text": "contained",
        "color": STATE_COLOURS["contained"],
        "index": len(STATE_CODES),
    }
    return [{"type": "value", "options": options}]


def bool_mappings(on_text, off_text, on_colour="red"):
    """Value mappings for a 0/1 gauge."""
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": off_text, "color": "green", "index": 0},
                "1": {"text": on_text, "color": on_colour, "index": 1},
            },
        }
    ]


def state_code(selector, by):
    """PromQL: the current state of `driftd_verdict_state{selector}` as its code, worst per `by`."""
    parts = [
        f'(driftd_verdict_state{{{selector},state="{state}"}} == 1) * {code}'
        for state, code in STATE_CODES
    ]
    return f"max by ({by}) ({' or '.join(parts)})"


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    """A Prometheus query of a panel."""
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def targets(*queries, instant=False, fmt="time_series"):
    """Several queries, refIds A, B, …; each query is (expr, legend)."""
    return [
        target(expr, legend, chr(ord("A") + i), instant, fmt)
        for i, (expr, legend) in enumerate(queries)
    ]


def panel(kind, title, description, queries, w=12, h=8, unit=None, mappings=None,
          overrides=None, options=None, custom=None, transformations=None, minimum=None):
    """A panel without position (the layout assigns `id` and `gridPos`)."""
    defaults = {"custom": custom or {}}
    if unit:
        defaults["unit"] = unit
    if mappings:
        defaults["mappings"] = mappings
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "text", "value": None}]}
    if minimum is not None:
        defaults["min"] = minimum
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": queries,
        "_size": (w, h),
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title, description, queries, unit=None, log=False, **kw):
    """A time-series panel; `log` draws the y axis in log10."""
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never"}
    if log:
        custom["scaleDistribution"] = {"type": "log", "log": 10}
    options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, queries, unit=unit, custom=custom,
                 options=options, **kw)


def timeline(title, description, queries, mappings, **kw):
    """A state-timeline panel."""
    options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    return panel("state-timeline", title, description, queries, mappings=mappings,
                 options=options, custom={"fillOpacity": 80, "lineWidth": 0}, **kw)


def stat(title, description, queries, w=6, h=4, unit=None, mappings=None, **kw):
    """A stat panel showing the last value."""
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "none", "textMode": "auto"}
    return panel("stat", title, description, queries, w=w, h=h, unit=unit, mappings=mappings,
                 options=options, **kw)


def layout(panels):
    """Assigns ids and grid positions left to right, wrapping at Grafana's 24 columns."""
    x = y = row_h = 0
    out = []
    for n, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = n
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x, row_h = x + w, max(row_h, h)
        out.append(p)
    return out


def datasource_variable():
    """The `datasource` template variable every query uses."""
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "options": [], "includeAll": False, "multi": False}


def query_variable(name, label, query):
    """A template variable filled by a `label_values(…)` query."""
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": query,
            "definition": query, "current": {}, "hide": 0, "refresh": 2, "regex": "", "sort": 1,
            "options": [], "includeAll": False, "multi": False}


def dashboard(uid, title, description, panels, variables=(), annotations=()):
    """The dashboard document (classic JSON model)."""
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "annotations": {"list": [builtin, *annotations]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": True, "icon": "external link", "includeVars": False,
                   "keepTime": True, "tags": ["driftd"], "targetBlank": False,
                   "title": "driftd", "type": "dashboards"}],
        "panels": layout(list(panels)),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["driftd"],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


# A deployment's phase: contained, else its worst combined verdict (the gate's order).
COMBINED = 'source="combined"'
PHASE = (f"{CONTAINED_CODE} * (max by (deployment) (driftd_contained) == 1)"
         f" or {state_code(COMBINED, 'deployment')}")

# When each (deployment, metric)'s current combined state began, within the dashboard range:
# the last sample at which that state's series was 0, or its first sample if it never was.
CURRENT = 'driftd_verdict_state{source="combined"} == 1'
SINCE_CHANGE = (
    "time() - max by (deployment) ("
    f'(max_over_time(timestamp(driftd_verdict_state{{source="combined"}} == 0)[$__range:])'
    f" and on (deployment, metric, state) ({CURRENT}))"
    f" or (min_over_time(timestamp({CURRENT})[$__range:])"
    f" and on (deployment, metric, state) ({CURRENT})))"
)


def overview():
    """Canary overview: every deployment's phase, time since its last verdict change,
    containments and signals."""
    table_overrides = [
        {"matcher": {"id": "byName", "options": "phase"},
         "properties": [{"id": "mappings", "value": state_mappings()},
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
        {"matcher": {"id": "byName", "options": "since last verdict change"},
         "properties": [{"id": "unit", "value": "s"}]},
        {"matcher": {"id": "byRegexp", "options": "contained|sample-ratio mismatch|arms silent"},
         "properties": [{"id": "mappings", "value": bool_mappings("yes", "no")},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
        {"matcher": {"id": "byName", "options": "deployment"},
         "properties": [{"id": "links", "value": [{
             "title": "Drill down",
             "url": "/d/driftd-deployment?var-deployment=${__value.raw}&${datasource:queryparam}&${__url_time_range}"}]}]},
    ]
    return dashboard(
        "driftd-overview", "driftd / Canary overview",
        "Every deployment driftd watches: its phase, how long since its verdict last changed, "
        "containments and experiment signals.",
        [
            panel("table", "Deployments",
                  "Phase: contained, else the worst combined verdict of its metrics "
                  "(fail > warn > insufficient > pass). Time since the last verdict change is "
                  "measured within the dashboard's time range.",
                  targets((PHASE, ""), (SINCE_CHANGE, ""),
                          ("max by (deployment) (driftd_contained)", ""),
                          ("max by (deployment) (driftd_sample_ratio_mismatch)", ""),
                          ("sum by (deployment) (driftd_telemetry_absent)", ""),
                          instant=True, fmt="table"),
                  w=24, h=8, overrides=table_overrides,
                  options={"showHeader": True, "cellHeight": "sm"},
                  transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True},
                          "renameByName": {"Value #A": "phase",
                                           "Value #B": "since last verdict change",
                                           "Value #C": "contained",
                                           "Value #D": "sample-ratio mismatch",
                                           "Value #E": "arms silent"}}}]),
            stat("Active containments", "Deployments whose gate is closed now.",
                 targets(("sum(max by (deployment) (driftd_contained))", "contained"))),
            stat("Deployments failing", "Deployments with a metric whose combined verdict is fail.",
                 targets(('count(max by (deployment) (driftd_verdict_state{source="combined",state="fail"}) == 1) or vector(0)',
                          "failing"))),
            stat("Sample-ratio mismatches", "Deployments whose canary share is off.",
                 targets(("sum(max by (deployment) (driftd_sample_ratio_mismatch))", "srm"))),
            stat("Silent arms", "Arms that sent nothing for detection.absent_after while the other arm sent.",
                 targets(("sum(max by (deployment, arm) (driftd_telemetry_absent))", "silent"))),
            timeline("Phase", "Each deployment's phase over time.",
                     targets((PHASE, "{{deployment}}")), state_mappings(), w=24, h=8),
            timeseries("Signals raised", "Signals raised per interval, by kind.",
                       targets(("sum by (kind) (increase(driftd_signals_total[$__rate_interval]))",
                                "{{kind}}")), minimum=0),
            timeseries("Verdict changes", "Verdict state changes per interval, by source and new state.",
                       targets(("sum by (source, state) (increase(driftd_verdict_changes_total[$__rate_interval]))",
                                "{{source}} → {{state}}")), minimum=0),
            timeseries("Events per deployment and arm", "Events applied per second.",
                       targets(("sum by (deployment, arm) (rate(driftd_cohort_events_total[$__rate_interval]))",
                                "{{deployment}} {{arm}}")), unit="ops", minimum=0),
            timeseries("Canary-vs-control p-value", "Always-valid p-value in the worse direction, per deployment and metric.",
                       targets(("min by (deployment, metric) (driftd_verdict_p_value)",
                                "{{deployment}} {{metric}}")), log=True),
        ],
    )


# Containment and release as annotations, from driftd_contained's changes: contained now and
# not for the whole last minute (or a series newer than a minute); released now and contained
# within the last minute. Each marks the minute after the change.
CONTAINED_ANNOTATION = ("driftd_contained{SEL} == 1 unless on (deployment) "
                        "(min_over_time(driftd_contained{SEL}[1m]) == 1 and on (deployment) "
                        "driftd_contained{SEL} offset 1m)")
RELEASED_ANNOTATION = ("driftd_contained{SEL} == 0 and on (deployment) "
                       "(max_over_time(driftd_contained{SEL}[1m]) == 1)")


def sel(**extra):
    """The drill-down's label selector body: the chosen deployment and metric plus `extra`."""
    labels = {"deployment": "$deployment", "metric": "$metric", **extra}
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def arm_value(window):
    """PromQL: the chosen metric's rate or mean per arm, cohorts weighted by their events."""
    s = sel(window=window)
    return (f"sum by (arm) ((driftd_cohort_window_rate{{{s}}} or driftd_cohort_window_mean{{{s}}})"
            f" * driftd_cohort_window_events{{{s}}}) / sum by (arm) (driftd_cohort_window_events{{{s}}}"
            f" and (driftd_cohort_window_rate{{{s}}} or driftd_cohort_window_mean{{{s}}}))")


def deployment():
    """Deployment drill-down: one deployment and metric, canary against control."""
    dep = 'deployment="$deployment"'
    contained = {"datasource": DS, "enable": True, "iconColor": "purple", "name": "Contained",
                 "expr": CONTAINED_ANNOTATION.replace("SEL", dep),
                 "step": "30s", "titleFormat": "contained", "tagKeys": "deployment",
                 "textFormat": "{{deployment}}: gate closed", "useValueForTime": False}
    released = {**contained, "iconColor": "green", "name": "Released",
                "expr": RELEASED_ANNOTATION.replace("SEL", dep),
                "titleFormat": "released", "textFormat": "{{deployment}}: gate open"}
    return dashboard(
        "driftd-deployment", "driftd / Deployment drill-down",
        "One deployment and metric: canary against control with the confidence sequence, "
        "events per arm, the verdict over time; containments and releases are annotations.",
        [
            timeline("Verdict state", "Per source: pass, insufficient, warn, fail; and the gate.",
                     targets((state_code(sel(), "source"), "{{source}}"),
                             (f"{CONTAINED_CODE} * max(driftd_contained{{{dep}}})", "gate")),
                     state_mappings() + [{"type": "value", "options": {"0": {"text": "open", "color": "green", "index": 5}}}],
                     w=24, h=6),
            timeseries("Canary vs control: $metric",
                       "Rate (share of events) or mean score per arm, over the span and the recent window.",
                       targets((arm_value("span"), "{{arm}} (span)"),
                               (arm_value("recent"), "{{arm}} (recent)"))),
            timeseries("Canary − control with confidence bounds",
                       "The estimate and its always-valid confidence bounds (each one-sided at the "
                       "metric's alpha); the test fails when the harmful-side bound excludes 0 and the "
                       "estimate is past min_effect in the worse direction.",
                       targets((f"driftd_verdict_difference{{{sel()}}}", "{{bound}}")),
                       overrides=[{"matcher": {"id": "byName", "options": "ci_high"},
                                   "properties": [{"id": "custom.fillBelowTo", "value": "ci_low"},
                                                  {"id": "custom.fillOpacity", "value": 20}]}]),
            timeseries("Events per arm (current test)", "Events each arm contributed to the current canary-vs-control test.",
                       targets((f"max by (arm) (driftd_verdict_events{{{sel()}}})", "{{arm}}")), minimum=0),
            timeseries("Event rate per arm", "Events applied per second to the deployment, by arm.",
                       targets((f"sum by (arm) (rate(driftd_cohort_events_total{{{dep}}}[$__rate_interval]))", "{{arm}}")),
                       unit="ops", minimum=0),
            timeseries("p-value", "Always-valid p-value of the canary-vs-control test in the worse direction.",
                       targets((f"min(driftd_verdict_p_value{{{sel()}}})", "p-value")), log=True),
            timeseries("Long-run baseline per cohort", "Exponentially weighted baseline (rate or mean) per cohort.",
                       targets((f"driftd_cohort_baseline_rate{{{sel()}}} or driftd_cohort_baseline_mean{{{sel()}}}",
                                "{{arm}} {{model_version}}"))),
            timeseries("Score quantiles per cohort (score metrics)",
                       "Quantiles over the span, per cohort (not aggregatable across cohorts); empty for rate metrics.",
                       targets((f"driftd_cohort_window_quantile{{{sel()}}}", "{{arm}} {{model_version}} q{{q}}"))),
            timeline("Experiment signals", "Sample-ratio mismatch and silent arms.",
                     targets((f"max(driftd_sample_ratio_mismatch{{{dep}}})", "sample-ratio mismatch"),
                             (f"max by (arm) (driftd_telemetry_absent{{{dep}}})", "{{arm}} silent")),
                     bool_mappings("raised", "ok", "orange"), w=24, h=5),
        ],
        variables=[
            query_variable("deployment", "Deployment", "label_values(driftd_verdict_state, deployment)"),
            query_variable("metric", "Metric", 'label_values(driftd_verdict_state{deployment="$deployment"}, metric)'),
        ],
        annotations=[contained, released],
    )


def quantiles(histogram, by="", qs=(0.5, 0.9, 0.99), window="$__rate_interval", legend=""):
    """Queries of histogram quantiles from `histogram`'s buckets."""
    group = f"le, {by}" if by else "le"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket[{window}])))",
             f"p{int(q * 100)}{(' ' + legend) if legend else ''}") for q in qs]


def pipeline():
    """Pipeline health: throughput, rejects, lag, latency, cohorts, actions, snapshots."""
    health = [
        ("min(driftd_ready)", "ready"),
        ("max by (reason) (driftd_kafka_blocked)", "kafka blocked: {{reason}}"),
        ("max(driftd_snapshot_write_failing)", "snapshot write failing"),
        ("clamp_max(sum(driftd_partitions_stalled), 1)", "partitions stalled"),
    ]
    return dashboard(
        "driftd-pipeline", "driftd / Pipeline health",
        "driftd itself: events in, rejects, consumer lag, processing latency, cohorts, "
        "containment actions and state snapshots.",
        [
            timeline("Health", "Readiness (1 = ready) and what blocks it.", targets(*health),
                     [{"type": "value", "options": {"0": {"text": "no", "color": "green", "index": 0},
                                                    "1": {"text": "yes", "color": "red", "index": 1}}}],
                     w=24, h=5,
                     overrides=[{"matcher": {"id": "byName", "options": "ready"},
                                 "properties": [{"id": "mappings", "value": bool_mappings("ready", "not ready", "green")}]}]),
            timeseries("Events by outcome", "Events consumed per second: applied or rejected.",
                       targets(("sum by (outcome) (rate(driftd_events_total[$__rate_interval]))", "{{outcome}}")),
                       unit="ops", minimum=0),
            timeseries("Rejects by reason", "Rejected events per second by reason, and privacy-gate rejections by kind.",
                       targets(("sum by (reason) (rate(driftd_events_rejected_total[$__rate_interval]))", "{{reason}}"),
                               ("sum by (kind) (rate(driftd_pii_detections_total[$__rate_interval]))", "pii: {{kind}}")),
                       unit="ops", minimum=0),
            timeseries("Consumer lag per partition", "Messages behind the partition end (librdkafka statistics).",
                       targets(("sum by (topic, partition) (driftd_consumer_lag)", "{{topic}}/{{partition}}")),
                       minimum=0),
            timeseries("Event-time delay", "Wall clock minus the stream's event-time clock (watermark).",
                       targets(("time() - max by (instance) (driftd_watermark_timestamp_seconds)", "{{instance}}")),
                       unit="s"),
            timeseries("Processing latency", "Decode + privacy gate + apply time per event.",
                       targets(*quantiles("driftd_event_processing_seconds")), unit="s"),
            timeseries("Event age when applied", "emitted_at to applied (live ingest): how fresh the evidence is.",
                       targets(*quantiles("driftd_event_age_seconds", qs=(0.5, 0.99))), unit="s"),
            timeseries("Cohorts", "Cohorts tracked (cap: cohorts.max_cohorts), overflow, evictions and misrouted events (message key not the deployment) per second.",
                       targets(("sum(driftd_cohorts)", "cohorts"),
                               ("sum(rate(driftd_events_overflow_total[$__rate_interval]))", "overflow events/s"),
                               ("sum(rate(driftd_cohorts_evicted_total[$__rate_interval]))", "evicted/s"),
                               ("sum(rate(driftd_events_misrouted_total[$__rate_interval]))", "misrouted events/s")),
                       minimum=0),
            timeseries("Actions", "Containment and alert actions per interval, by provider and outcome.",
                       targets(("sum by (provider, outcome) (increase(driftd_actions_total[$__rate_interval]))",
                                "{{provider}} {{outcome}}")), minimum=0),
            panel("table", "Action latency over the range",
                  "Verdict reaching containment to action done, retries included; p50 and p99 per provider and op.",
                  targets(*quantiles("driftd_action_duration_seconds", by="provider, op", qs=(0.5, 0.99),
                                     window="$__range"), instant=True, fmt="table"),
                  unit="s", options={"showHeader": True},
                  transformations=[{"id": "merge", "options": {}},
                                   {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                                  "renameByName": {"Value #A": "p50", "Value #B": "p99"}}}]),
            timeseries("Snapshots", "Partition snapshots written and failures by reason, per interval.",
                       targets(("sum(increase(driftd_snapshots_written_total[$__rate_interval]))", "written"),
                               ("sum by (reason) (increase(driftd_snapshot_failures_total[$__rate_interval]))", "failed: {{reason}}")),
                       minimum=0),
            timeseries("Snapshot write latency", "Encode and durably write one partition's snapshot.",
                       targets(*quantiles("driftd_snapshot_write_seconds", qs=(0.5, 0.99))), unit="s"),
            timeseries("Operations", "Dead letters, offset commits, config reloads, stale changes and task failures per interval.",
                       targets(("sum by (outcome) (increase(driftd_dead_letters_total[$__rate_interval]))", "dead letters {{outcome}}"),
                               ("sum by (outcome) (increase(driftd_offset_commits_total[$__rate_interval]))", "commits {{outcome}}"),
                               ("sum by (outcome) (increase(driftd_config_reloads_total[$__rate_interval]))", "reloads {{outcome}}"),
                               ("sum by (kind) (increase(driftd_stale_changes_total[$__rate_interval]))", "stale {{kind}}"),
                               ("sum by (task) (increase(driftd_task_failures_total[$__rate_interval]))", "task failed {{task}}")),
                       minimum=0),
            timeseries("Process", "Resident memory and CPU of each driftd process.",
                       targets(("process_resident_memory_bytes and on (instance, job) driftd_build_info", "{{instance}} memory"),
                               ("rate(process_cpu_seconds_total[$__rate_interval]) and on (instance, job) driftd_build_info",
                                "{{instance}} cpu")),
                       unit="bytes",
                       overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                   "properties": [{"id": "unit", "value": "percentunit"},
                                                  {"id": "custom.axisPlacement", "value": "right"}]}]),
        ],
    )


DASHBOARDS = {
    "driftd-overview.json": overview,
    "driftd-deployment.json": deployment,
    "driftd-pipeline.json": pipeline,
}


def render(build):
    """The file text of one dashboard."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("dashboards differ from scripts/gen_dashboards.py; run it and commit: " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
