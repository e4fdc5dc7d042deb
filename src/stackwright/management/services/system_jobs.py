"""Jobs the engine gives itself, with no API command behind them: name -> fn(ctx, **params)
returning the job's steps. They run, are recorded and resume like the API's async jobs."""

from collections.abc import Callable
from typing import Any

from . import ha, pool_attach, template_jobs, templates

SYSTEM_JOBS: dict[str, Callable[..., Any]] = {
    pool_attach.ATTACH_JOB: pool_attach.attach_job,
    ha.INVESTIGATE: ha.investigate_job,
    ha.RESTART: ha.restart_job,
    ha.STOP_STRAY: ha.stop_stray_job,
    templates.DOWNLOAD_JOB: template_jobs.download_job,
}
