"""Waiting for async jobs through queryAsyncJobResult, for end-to-end tests."""

import time


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
