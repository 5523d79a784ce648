"""The life of a run. `kinds` says, per kind of run, what does its work, on which queue, whether
it writes a model or resumes; `specs` reads a model spec once (ModelSpec); `run_state` and
`lifecycle` move a run through the store (claim, report, heartbeat, outcome). One module per
family of runs: `corpora`, `vocabulary`, `training`, `evaluation`, `experiments`, and `catalogue`
(the models the product knows). `queueing/` is the RQ side: queues, submit, the job function,
the worker process and the embedded Valkey. Imports core and db; never app."""
