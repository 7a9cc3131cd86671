"""Compares what each scenario observed on RingMQ with what it observed on Apache RocketMQ.

Observations are the facts a scenario reports with OBSERVE (delivered messages and their fields,
per-queue offsets, response codes of refused requests, admin output); each key is compared as
JSON. The result is a Markdown table, one row per scenario, and a list of every difference.
"""

import json

MAX_VALUE_CHARS = 160


def _short(value):
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def differences(ringmq_result, apache_result):
    """Keys whose observed values differ (or that only one side observed)."""
    mine, theirs = ringmq_result.observations, apache_result.observations
    found = []
    for key in sorted(set(mine) | set(theirs)):
        if key not in mine:
            found.append((key, "(not observed)", _short(theirs[key])))
        elif key not in theirs:
            found.append((key, _short(mine[key]), "(not observed)"))
        elif json.dumps(mine[key], sort_keys=True) != json.dumps(theirs[key], sort_keys=True):
            found.append((key, _short(mine[key]), _short(theirs[key])))
    return found


def compare(specs, ringmq_results, apache_results):
    """Returns (Markdown text, problems). A problem is a difference nothing explains (the scenario
    passed on both targets and scenarios.toml gives no `differs` reason), or a `differs` reason
    with no difference left to explain."""
    rows = ["| Scenario | RingMQ | Apache RocketMQ | Observations compared | Differences |",
            "| --- | --- | --- | --- | --- |"]
    details = []
    problems = []
    for spec in specs:
        mine, theirs = ringmq_results[spec.name], apache_results[spec.name]
        found = differences(mine, theirs)
        compared = len(set(mine.observations) | set(theirs.observations))
        ours, apaches = mine.outcome(spec, "ringmq"), theirs.outcome(spec, "apache")
        rows.append(f"| {spec.name} | {ours} | {apaches} | {compared} | {len(found) or 'none'} |")
        for key, ours_value, apache_value in found:
            details.append(f"- `{spec.name}` `{key}`: RingMQ `{ours_value}`, Apache `{apache_value}`")
        both_passed = ours == "PASS" and apaches == "PASS"
        if both_passed and found and not spec.differs:
            problems.append(f"{spec.name}: passed on both, but observed differently ({', '.join(k for k, _, _ in found)}); "
                            "fix the difference or explain it with `differs` in scenarios.toml")
        if both_passed and spec.differs and not found:
            problems.append(f"{spec.name}: no difference left, remove `differs` from scenarios.toml")
    text = "\n".join(rows)
    if details:
        text += "\n\nDifferences:\n\n" + "\n".join(details)
    return text, problems
