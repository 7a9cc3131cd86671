"""Builds what the scenarios run: the Java scenarios with their Maven dependencies, the Go
scenarios with their modules, and (for differential runs) Apache RocketMQ's server jars.

Everything comes from Maven Central and the Go module proxy on first use and lands in the
work directory; nothing is cached that a clean machine cannot rebuild.
"""

import os
import shutil
import subprocess
from pathlib import Path

COMPAT_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = COMPAT_DIR.parent


def cargo_target_dir():
    """Where cargo puts RingMQ's binaries (release/) and the suite its builds (compat/)."""
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO_DIR / "target"))



class InstallError(Exception):
    """A build step failed; the message names the command and the tail of its output."""


# A build that takes longer has stalled (a download that never ends); the first one on a clean
# machine takes a minute or two.
BUILD_TIMEOUT_S = 900


def _run(argv, cwd, what):
    print(f"== {what}: {' '.join(map(str, argv))}", flush=True)
    try:
        completed = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                                   timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise InstallError(f"{what} did not finish in {BUILD_TIMEOUT_S} s") from error
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-40:])
        raise InstallError(f"{what} failed ({completed.returncode}):\n{tail}")


def java_scenarios(work_dir):
    """Compiles compat/java into work_dir/java; returns the classpath to run it with."""
    out = Path(work_dir) / "java"
    lib = out / "lib"
    if lib.exists():
        shutil.rmtree(lib)
    _run(
        ["mvn", "-B", "-q", "-f", COMPAT_DIR / "java" / "pom.xml", f"-DbuildDirectory={out}", "package",
         "dependency:copy-dependencies", f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
         "-DskipTests"],
        COMPAT_DIR, "java scenarios",
    )
    return f"{out}/classes:{lib}/*"


def go_scenarios(work_dir):
    """Builds compat/go into work_dir/go/compat-go; returns the binary's path."""
    binary = Path(work_dir) / "go" / "compat-go"
    binary.parent.mkdir(parents=True, exist_ok=True)
    # No VCS stamp: the checkout may belong to another user, and the binary needs none.
    _run(["go", "build", "-buildvcs=false", "-o", binary, "."], COMPAT_DIR / "go", "go scenarios")
    return binary


def apache_server(work_dir):
    """Resolves Apache RocketMQ's NameServer and broker jars into work_dir/apache-lib."""
    lib = Path(work_dir) / "apache-lib"
    if not lib.exists() or not any(lib.glob("rocketmq-broker-*.jar")):
        _run(
            ["mvn", "-B", "-q", "-f", COMPAT_DIR / "apache" / "pom.xml", "dependency:copy-dependencies",
             f"-DoutputDirectory={lib}", "-DincludeScope=runtime"],
            COMPAT_DIR, "apache rocketmq server",
        )
    return lib
