"""The job names runs were queued under before worker.queueing.jobs.run_job: a job already in
Redis names one of these, and a worker still runs it (see worker.queueing.queues.JOB_FUNCTIONS)."""

from worker.queueing.jobs import run_job

analysis_job = expansion_job = import_job = training_job = run_job
