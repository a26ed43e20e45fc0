"""The worker: it takes jobs from the queue, runs their handlers and records what happened.

The path of a job through one worker, and the part that does each step:

1. **Read and claim** (``readers``, the caller's thread): while a slot is free, read queue
   entries and claim their jobs in the database; the claim raises the job's
   ``attempt_id`` and sets this worker's lease. An entry whose job is running elsewhere,
   finished or cancelled is acked unrun. Entries idle past the lease (a dead worker's)
   are reclaimed the same way. One strategy per queue type, chosen once.
2. **Hold** (``held``): each claimed attempt is a ``Held`` until its outcome is committed;
   held jobs are capped at four times the slots, so a slow database cannot make the
   worker take ever more work.
3. **Run** (``slots``, ``attempt``, ``middleware``): a slot thread calls the kind's handler
   through the middleware (tracing, logging, metrics, timing) and turns its return or
   exception into an ``Outcome``.
4. **Keep the lease** (``leases``, one thread): renew the leases of held jobs, cancel an
   attempt past its timeout, cancelled by a user or whose lease was lost, and abandon
   (free the slot of) a handler that ignores its cancellation.
5. **Commit and ack** (``committer``, one thread): commit outcomes in groups, fenced by
   ``attempt_id`` and lease owner so a late or zombie attempt changes nothing, then ack
   the queue entries. On PostgreSQL with a queue outside the database the next claim
   commits them instead, in its own statement.
6. **Stop** (``worker``): stop reading; running handlers get ``shutdown_grace_s`` to end,
   the rest are released (queued again at once) and their entries acked.

In a database-per-tenant deployment (``conveyor.tenancy``) one worker serves every
tenant database: each queue entry names its tenant, the claim goes to that database, and
the job's lease, commit and release follow it there. A tenant database that fails delays
only its own jobs.
"""

from conveyor.worker.held import WorkerStats
from conveyor.worker.middleware import DEFAULT_MIDDLEWARE, Middleware
from conveyor.worker.worker import Worker

__all__ = ["DEFAULT_MIDDLEWARE", "Middleware", "Worker", "WorkerStats"]
