"""What a failed Spark call means to us: a query being stopped, or an error told in one line.

A ``foreachBatch`` function that raises hands Spark its whole Python traceback as the message of
a Java exception. Spark then asks ``StreamExecution.isInterruptionException`` whether the query
was merely being stopped, by running the regular expression ``PROXY_ERROR`` (``calling((.|\\n)*)
InterruptedException``) over that message; Java's regex engine recurses once per character of
such a loop, so a traceback that carries a JVM stack (tens of kilobytes) overflows the stack of
the stream thread: ``Exception in thread "stream execution thread ..." java.lang.StackOverflowError``
and a thousand frames on stderr at every SIGTERM or pause. :func:`batch_errors` therefore turns
every error of a micro-batch into a short one: a stop into the few words Spark recognises as a
stop, anything else into its first line (the whole text goes to the JSON log first).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fleetgen_spark.core.exceptions import FleetGenError, GenerationError
from fleetgen_spark.storage.logs import get_logger, log_event

__all__ = ["QueryStopping", "batch_errors", "first_line", "interrupted"]

_log = get_logger("sink")

# The Java exceptions by which Spark interrupts a micro-batch when its query is stopped (the names
# StreamExecution.IO_EXCEPTION_NAMES lists), and the job cancellation that stop() also causes.
_INTERRUPTIONS = (
    "java.lang.InterruptedException",
    "java.io.InterruptedIOException",
    "java.nio.channels.ClosedByInterruptException",
)
_CANCELLED = re.compile(r"SparkException: .*\bcancelled\b")
_OURS = re.compile(r"^fleetgen_spark\.core\.exceptions\.\w+: (.+)$", flags=re.MULTILINE)


class QueryStopping(RuntimeError):
    """The micro-batch was cut short because its query is being stopped (pause, SIGTERM, Ctrl-C).

    Its message is the shape Spark's ``PROXY_ERROR`` matches, kept a line long, so Spark ends the
    query as stopped, quietly, instead of as failed.
    """

    def __init__(self, where: str, cause: str) -> None:
        super().__init__(f"py4j.protocol.Py4JJavaError: An error occurred while calling {where}: {cause}")


def first_line(error: Any) -> str:
    """The first line of a Spark error that is ours or Spark's own (their full text carries stack traces).

    A failure inside ``foreachBatch`` or a Python source surfaces wrapped by Spark; the line that says
    what went wrong is the last ``fleetgen_spark.core.exceptions...: message`` of the Python traceback when
    there is one.
    """
    text = str(getattr(error, "desc", None) or error).strip()
    ours = _OURS.findall(text)
    if ours:
        return str(ours[-1])[:1000]
    lines = text.splitlines()
    if lines and lines[0].startswith("An error occurred while calling") and len(lines) > 1:
        # A Py4JJavaError: the Java exception is on the next line, after ": ".
        return lines[1].removeprefix(": ")[:1000]
    return lines[0][:1000] if lines else type(error).__name__


def interrupted(error: BaseException) -> str | None:
    """The Java interruption behind ``error`` when Spark is stopping the query under us, else None.

    A classic session raises a ``Py4JJavaError`` whose Java exception (or one of its causes) is an
    interruption or a cancelled job; its first lines name it too, which is what a converted error
    (and Spark itself) has to go by.
    """
    java = getattr(error, "java_exception", None)
    for _ in range(8):  # a cause chain is short; never walk a cycle
        if java is None:
            break
        try:
            name = str(java.getClass().getName())
            message = str(java.getMessage() or "")
            java = java.getCause()
        except Exception:  # the gateway is going away with the session: fall back on the text
            break
        if name in _INTERRUPTIONS:
            return name
        if name == "org.apache.spark.SparkException" and "cancelled" in message:
            return f"{name}: job cancelled"
    head = "\n".join(str(error).splitlines()[:4])
    for name in _INTERRUPTIONS:
        if name in head:
            return name
    return "org.apache.spark.SparkException: job cancelled" if _CANCELLED.search(head) else None


@contextmanager
def batch_errors(query: str, epoch: int) -> Iterator[None]:
    """Around a ``foreachBatch`` function: every error leaves it short (see the module's docstring).

    Our own errors (:class:`FleetGenError`) keep their message; a stop becomes :class:`QueryStopping`;
    anything else is logged whole at ERROR and raised again as a :class:`GenerationError` of one line.
    """
    try:
        yield
    except FleetGenError as err:
        raise err.with_traceback(None) from None
    except Exception as err:
        cause = interrupted(err)
        if cause is not None:
            raise QueryStopping(f"the {query} micro-batch {epoch}", cause) from None
        text = str(err)
        # The query's failure is logged at ERROR once, by the listener; here the whole text, for the JSON log.
        log_event(_log, "micro-batch failed", query=query, epoch=epoch, error=text[:4000])
        cause = f"{type(err).__name__}: {first_line(text)}"
        raise GenerationError(f"the {query} micro-batch {epoch} failed: {cause}") from None
