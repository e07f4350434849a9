"""The jars Spark needs beside its own: Delta Lake's, and Hadoop's S3A client for ``s3a://`` data
directories, fetched once with the Ivy that ships inside pyspark and cached under ``~/.cache/fleetgen/jars``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DELTA_PACKAGE", "S3A_PACKAGES", "delta_jars", "s3a_jars"]

# delta-spark's pip helper asks for the jar of its own version (4.4.1), but Maven Central
# serves delta-spark_4.2_2.13 only at 4.4.0 for Spark 4.2; the Python API of the 4.4.1
# wheel drives the 4.4.0 jar unchanged (a patch release). Spark resolves the jar through
# Ivy into ~/.ivy2.5.2 on first use and reads it from there afterwards.
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"
# Hadoop's S3A client for pyspark's bundled Hadoop 3.5.0, and the AWS SDK v2 modules it calls, without
# their transitive Hadoop, Netty, SLF4J and HTTP-client jars (pyspark ships those) and without the 686 MB
# SDK `bundle` jar that hadoop-aws's POM names: 36 jars, 13 MB. Versions as measured together.
S3A_PACKAGES = (
    "org.apache.hadoop:hadoop-aws:3.5.0",
    "software.amazon.awssdk:s3:2.35.4",
    "software.amazon.awssdk:s3-transfer-manager:2.35.4",
    "software.amazon.awssdk:sts:2.35.4",
    # hadoop-aws 3.5.0 loads its stream factory from it at the first s3a:// access (ClassNotFoundException
    # software.amazon.s3.analyticsaccelerator.request.ObjectClient without it).
    "software.amazon.s3.analyticsaccelerator:analyticsaccelerator-s3:1.3.1",
)
_S3A_EXCLUDED = ("io.netty", "org.slf4j", "org.apache.httpcomponents", "commons-codec", "commons-logging")


def _ivy_home() -> Path:
    return Path.home() / ".ivy2.5.2"  # Spark 4's default, so spark.jars.packages and we share downloads


def delta_jars() -> list[str] | None:
    """The Delta Lake jars and their dependencies as local files, resolved once and cached.

    The first call runs Ivy (the copy that ships inside pyspark) on its own, quietly, into
    ``~/.ivy2.5.2/cache`` and ``~/.cache/fleetgen/jars/<package>/``; later calls only list that
    folder. Handing Spark these files through ``spark.jars`` skips the resolution report Spark
    prints for ``spark.jars.packages`` on every start, and the resolving itself (Spark reported
    1.7 s for a fully cached resolve here). None when the jars cannot be fetched: the caller
    falls back to ``spark.jars.packages`` and Spark says what went wrong.
    """
    folder = _jar_cache() / DELTA_PACKAGE.replace(":", "_")
    module = _ivy_module([DELTA_PACKAGE])
    if not (folder / ".complete").is_file() and not _resolve_with_ivy(
        folder, module, f"the Delta Lake jars ({DELTA_PACKAGE})"
    ):
        return None
    # Spark provides Scala and itself: Spark's own resolver excludes them the same way. Delta 4.4.0's POM also
    # names hadoop-client-api/runtime 3.4.2; pyspark's own 3.5.0 must be the only Hadoop (S3A is 3.5.0's).
    provided = ("org.scala-lang_", "org.apache.spark_", "org.apache.hadoop_hadoop-client-")
    return sorted(str(p) for p in folder.glob("*.jar") if not p.name.startswith(provided))


def s3a_jars() -> list[str] | None:
    """Hadoop's S3A client and the AWS SDK modules it needs (:data:`S3A_PACKAGES`), resolved once and cached
    like :func:`delta_jars`; None when they cannot be fetched (Spark then says ``No FileSystem for scheme "s3a"``)."""
    folder = _jar_cache() / "s3a_hadoop-aws-3.5.0-2"
    module = _ivy_module(S3A_PACKAGES, _S3A_EXCLUDED, alone=S3A_PACKAGES[:1])
    if not (folder / ".complete").is_file() and not _resolve_with_ivy(folder, module, "Hadoop's S3A jars"):
        return None
    return sorted(str(p) for p in folder.glob("*.jar"))


def _jar_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleetgen" / "jars"


def _ivy_module(packages: Iterable[str], excluded: Iterable[str] = (), alone: Iterable[str] = ()) -> str:
    """An ivy.xml asking for ``packages`` (those in ``alone`` without their own dependencies: hadoop-aws's
    are pyspark's Hadoop and the SDK bundle), each without the ``excluded`` organisations."""
    excludes = "".join(f'<exclude org="{org}"/>' for org in excluded)
    lines = []
    for package in packages:
        org, name, rev = package.split(":")
        transitive = "false" if package in set(alone) else "true"
        lines.append(
            f'<dependency org="{org}" name="{name}" rev="{rev}" transitive="{transitive}" '
            f'conf="default->default">{excludes}</dependency>'
        )
    return (
        '<ivy-module version="2.0"><info organisation="fleetgen" module="jars"/>'
        '<configurations><conf name="default"/></configurations>'
        f"<dependencies>{''.join(lines)}</dependencies></ivy-module>\n"
    )


def _resolve_with_ivy(folder: Path, module: str, what: str) -> bool:
    """Retrieve the jars into a private folder, then rename it into place: two first runs at
    once both succeed, and a run killed half-way leaves no folder that looks complete."""
    import pyspark

    ivy = sorted((Path(pyspark.__file__).parent / "jars").glob("ivy-*.jar"))
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not ivy or java is None:
        return False
    work = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = work.with_name(work.name + ".ivy.xml")
    spec.write_text(module, encoding="utf-8")
    print(f"fleetgen: fetching {what} once into {folder} ...", file=sys.stderr)
    command = [
        str(java), "-jar", str(ivy[-1]), "-error", "-confs", "default",
        "-ivy", str(spec),
        "-cache", str(_ivy_home() / "cache"),
        "-retrieve", str(work / "[organization]_[artifact]-[revision](-[classifier]).[ext]"),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0 or not any(work.glob("*.jar")):
            return False
        (work / ".complete").touch()
        # The folder only ever appears complete; if another process put one there first, keep it.
        with contextlib.suppress(OSError):
            work.rename(folder)
        return (folder / ".complete").is_file()
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spec.unlink(missing_ok=True)
