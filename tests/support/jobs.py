"""Waiting for async jobs through queryAsyncJobResult, for end-to-end tests."""

import collections
import re
import time
from pathlib import Path


def job_of(api, jobid, timeout=60):
    """Poll queryAsyncJobResult until the job is final (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.queryAsyncJobResult(jobid=jobid)
        if job["jobstatus"] != 0:
            return job
        time.sleep(0.1)
    raise AssertionError("job %s still pending after %s s" % (jobid, timeout))


def run_job(api, command, **params):
    """Send an async command; returns (its immediate answer, the final job)."""
    answer = getattr(api, command)(**params)
    return answer, job_of(api, answer["jobid"])


# The line an engine logs when a job ends (services/jobs.py): "job <uuid> <command> finished in
# <seconds>s" or "job <uuid> failed: <text> (<code>)".
FINAL_LINE = re.compile(r"job ([0-9a-f-]{36}) (?:\S+ finished in|failed:)")


def job_ends(*log_files):
    """How many times each job ended, over the logs of one or more engines (or lives of one)."""
    return collections.Counter(job for path in log_files
                               for job in FINAL_LINE.findall(Path(path).read_text(errors="replace")))
