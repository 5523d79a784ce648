"""The RQ side of a run: the queues and the Redis connection (queues), putting recorded runs on
them and taking them off (submit), the one job function a worker calls (jobs), the worker process
and its reconciler (serve), and the Valkey server `adapt-distill up` starts when REDIS_URL is unset
(embedded). Nothing here knows how a kind of run does its work: worker.kinds says."""
