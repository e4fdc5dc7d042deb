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


# The lines an engine logs when a job ends (services/jobs.py): "job <uuid> <command> finished in
# <seconds>s" once the job is final, and "job <uuid> failed: <text> (<code>)" when it fails, on
# its own (a failure recorded after the run) or before the first (one recorded within it).
FINISHED_LINE = re.compile(r"job ([0-9a-f-]{36}) \S+ finished in")
FAILED_LINE = re.compile(r"job ([0-9a-f-]{36}) failed:")


def job_ends(*log_files):
    """How many times each job ended, over the logs of one or more engines (or lives of one)."""
    text = "".join(Path(path).read_text(errors="replace") for path in log_files)
    finished, failed = collections.Counter(FINISHED_LINE.findall(text)), collections.Counter(FAILED_LINE.findall(text))
    return collections.Counter({job: max(finished[job], failed[job]) for job in finished.keys() | failed.keys()})
