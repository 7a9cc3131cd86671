#!/usr/bin/env python3
"""The compatibility suite: Apache RocketMQ's own clients and tools against a real cluster.

  compat/run.py run  [--target ringmq|apache] [--only NAME,...]   run scenarios, print a summary
  compat/run.py diff [--only NAME,...] [--markdown FILE]          run both targets, list differences

`run` exits non-zero when a scenario expected to pass fails, when one expected to fail passes,
or when the cluster itself cannot be started; `diff` also when a scenario that passed on both
targets observed something different on each without a `differs` reason (or has a reason and no
difference left). See compat/README.md.
"""

import argparse
import json
import shutil
import signal
import sys
import time
import tomllib
from pathlib import Path

from harness import diff, install, scenario, targets

COMPAT_DIR = Path(__file__).resolve().parent
TARGET_NAMES = ("ringmq", "apache")


def load_specs(only):
    with open(COMPAT_DIR / "scenarios.toml", "rb") as file:
        catalogue = tomllib.load(file)
    specs = []
    for entry in catalogue["scenario"]:
        xfail = {target: entry[f"xfail_{target}"] for target in TARGET_NAMES if f"xfail_{target}" in entry}
        xfail_saw = {target: entry[f"xfail_{target}_saw"] for target in TARGET_NAMES
                     if f"xfail_{target}_saw" in entry}
        if set(xfail_saw) - set(xfail):
            raise SystemExit(f"scenarios.toml: {entry['name']} says what its failure shows but not why it fails")
        specs.append(scenario.Spec(entry["name"], entry["runner"], float(entry.get("timeout_s", 60)),
                                   entry["summary"], xfail, entry.get("jvm_args", []), xfail_saw,
                                   entry.get("differs", "")))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise SystemExit("scenarios.toml names a scenario twice")
    if only:
        wanted = set(only.split(","))
        unknown = wanted - set(names)
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in wanted]
    return specs


def run_target(target_name, specs, bin_dir, work_root):
    """Runs every spec against one fresh cluster; returns {name: Result}."""
    work_dir = work_root / target_name
    if work_dir.exists():
        shutil.rmtree(work_dir)
    (work_dir / "logs").mkdir(parents=True)
    runners = {}
    if any(spec.runner == "java" for spec in specs):
        runners["java"] = install.java_scenarios(work_root)
    if any(spec.runner == "go" for spec in specs):
        runners["go"] = install.go_scenarios(work_root)

    cluster = targets.make(target_name, work_dir / "cluster", bin_dir, work_root)
    print(f"== starting {target_name} (logs in {work_dir})", flush=True)
    results = {}
    try:
        cluster.start()
        for spec in specs:
            argv = argv_for(spec, runners, work_dir)
            env = {
                "COMPAT_NAMESRV": cluster.namesrv_addr,
                "COMPAT_BROKER": cluster.broker_addr,
                "COMPAT_SCENARIO": spec.name,
                "COMPAT_TARGET": target_name,
                "COMPAT_WORK": str(work_dir / "client"),
            }
            result = scenario.run(spec, argv, env, work_dir / "logs" / f"{spec.name}.log", cluster.restart_broker)
            if not cluster.broker.alive():
                result.passed = False
                result.reason = f"the broker died during the scenario; {result.reason}".rstrip("; ")
                cluster.restart_broker()
            results[spec.name] = result
            outcome = result.outcome(spec, target_name)
            detail = result.reason if outcome != "PASS" else ""
            print(f"{outcome:6} {spec.name:34} {result.seconds:6.1f} s  {detail}", flush=True)
    finally:
        cluster.stop()
    return results


def argv_for(spec, runners, work_dir):
    if spec.runner == "java":
        return [
            # Output in UTF-8 whatever the locale, so non-ASCII fields compare as sent.
            "java", "-Xmx256m", "-Dfile.encoding=UTF-8", "-Dsun.stdout.encoding=UTF-8",
            f"-Duser.home={work_dir / 'client'}",
            "-Drocketmq.client.logLevel=WARN", f"-Dcompat.mqadminHome={COMPAT_DIR / 'java'}",
            *spec.jvm_args, "-cp", runners["java"], "compat.Main", spec.name,
        ]
    if spec.runner == "go":
        return [str(runners["go"]), spec.name]
    raise SystemExit(f"{spec.name}: unknown runner {spec.runner}")


def print_summary(target_name, specs, results):
    counts = {}
    print(f"\n== {target_name}: scenario summary")
    print(f"{'outcome':7} {'scenario':34} {'time':>8}  reason")
    for spec in specs:
        result = results[spec.name]
        outcome = result.outcome(spec, target_name)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "XFAIL":
            reason = f"expected: {spec.xfail[target_name]} (saw: {result.reason})"
        elif outcome == "XPASS":
            reason = f"passed, but expected to fail: {spec.xfail[target_name]}"
        elif outcome == "FAIL" and target_name in spec.xfail:
            reason = (f"expected to fail showing \"{spec.xfail_saw.get(target_name)}\", but: {result.reason} "
                      f"[log: {result.log_path}]")
        elif outcome == "FAIL":
            reason = f"{result.reason} [log: {result.log_path}]"
        else:
            reason = ""
        print(f"{outcome:7} {spec.name:34} {result.seconds:6.1f} s  {reason}")
    print("== " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("PASS", "XFAIL", "FAIL", "XPASS")))
    return counts.get("FAIL", 0) + counts.get("XPASS", 0) == 0


class Interrupted(Exception):
    """SIGTERM or SIGINT: stop the cluster (the finally blocks do) and exit."""


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main():
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run scenarios against one target")
    run_parser.add_argument("--target", choices=TARGET_NAMES, default="ringmq")
    diff_parser = sub.add_parser("diff", help="run both targets and compare what each scenario observed")
    diff_parser.add_argument("--markdown", type=Path, help="also write the comparison as a Markdown table")
    for p in (run_parser, diff_parser):
        p.add_argument("--only", help="comma-separated scenario names")
        p.add_argument("--bin-dir", type=Path, help="RingMQ binaries [default: the cargo target dir's release/]")
        p.add_argument("--results", type=Path, help="write the results as JSON")
        p.add_argument("--work-dir", type=Path, help="builds, cluster files and logs [default: the cargo target dir's compat/]")
    args = parser.parse_args()

    specs = load_specs(args.only)
    bin_dir = args.bin_dir or install.cargo_target_dir() / "release"
    work_root = (args.work_dir or install.cargo_target_dir() / "compat").resolve()
    started = time.monotonic()
    try:
        if args.command == "run":
            results = {args.target: run_target(args.target, specs, bin_dir, work_root)}
            ok = print_summary(args.target, specs, results[args.target])
        else:
            results = {name: run_target(name, specs, bin_dir, work_root) for name in TARGET_NAMES}
            # Every target's summary is printed, also when an earlier one failed.
            oks = [print_summary(name, specs, results[name]) for name in TARGET_NAMES]
            ok = all(oks)
            table, problems = diff.compare(specs, results["ringmq"], results["apache"])
            print("\n" + table)
            for problem in problems:
                print(f"DIFF   {problem}")
            ok = ok and not problems
            if args.markdown:
                args.markdown.write_text(table + "\n")
    except (install.InstallError, targets.TargetError, Interrupted) as error:
        print(f"compat: {error}", file=sys.stderr)
        return 2
    if args.results:
        args.results.write_text(json.dumps(
            {t: {n: vars(r) for n, r in rs.items()} for t, rs in results.items()}, indent=2, sort_keys=True))
    print(f"== compat finished in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
