-- Every statement dbqueue runs that is the same on all three dialects.
-- Dialect files (postgresql.sql, mysql.sql, sqlite.sql) override a statement by name.
-- {now} is the database clock in epoch seconds; "IN :x" is an expanding list parameter.

-- name: insert_job
-- Enqueue one job. A live unique key (or an id already stored) makes it insert nothing and
-- return no row.
INSERT INTO dbqueue_jobs (
    id, task, queue, priority, status, payload, content_type, max_retries,
    run_at, expires_at, unique_key, parent_id, root_id, options
) VALUES (
    :id, :task, :queue, :priority, 'pending', :payload, :content_type, :max_retries,
    COALESCE(:run_at, {now} + :delay), :expires_at, :unique_key, :parent_id, :root_id, :options
)
ON CONFLICT DO NOTHING
RETURNING queue

-- name: find_live_unique
-- The live job holding a unique key, if any.
SELECT id FROM dbqueue_jobs
WHERE unique_key = :unique_key
  AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')

-- name: job_exists
-- Whether a job id is stored (used to recognise an insert whose commit acknowledgement was lost).
SELECT 1 FROM dbqueue_jobs WHERE id = :id

-- name: complete
-- running -> completed: store the result. error_type marks an ignored run.
UPDATE dbqueue_jobs
SET status = 'completed', result = :result, result_type = :result_type,
    error_type = :error_type, error = NULL, traceback = NULL, finished_at = {now}
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: fail
-- running -> failed: store the error, its type and traceback.
UPDATE dbqueue_jobs
SET status = 'failed', error_type = :error_type, error = :error, traceback = :traceback,
    finished_at = {now}
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: retry
-- running -> retrying: run again after :delay seconds; keep the last error for inspection.
-- New args (Task.retry(args=...)) replace the payload when given.
UPDATE dbqueue_jobs
SET status = 'retrying', run_at = {now} + :delay, error_type = :error_type, error = :error,
    traceback = :traceback, payload = COALESCE(:payload, payload)
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: release
-- running -> pending without using up the attempt: claimed but never started (shutdown),
-- or rejected with requeue.
UPDATE dbqueue_jobs
SET status = 'pending', attempt = attempt - 1, worker = NULL, started_at = NULL
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: expire
-- running -> cancelled: the job's expires time passed before it started.
UPDATE dbqueue_jobs
SET status = 'cancelled', error_type = 'dbqueue.exceptions.TaskRevokedError',
    error = 'expired', finished_at = {now}
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: revoke
-- Any live status -> cancelled (AsyncResult.revoke). A running job's outcome is then discarded.
UPDATE dbqueue_jobs
SET status = 'cancelled', error_type = 'dbqueue.exceptions.TaskRevokedError',
    error = 'revoked', finished_at = {now}
WHERE id IN :ids AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')

-- name: running_ids
-- The jobs a worker holds, for its ownership audit (a claim whose commit reply was lost).
SELECT id FROM dbqueue_jobs WHERE status = 'running' AND worker = :worker

-- name: get_job
-- Everything about one job.
SELECT id, task, queue, priority, status, payload, content_type, result, result_type,
       error_type, error, traceback, attempt, max_retries, run_at, expires_at, created_at,
       started_at, finished_at, worker, unique_key, parent_id, root_id, options,
       checkpointed, fan_out_id, fan_out_index
FROM dbqueue_jobs WHERE id = :id

-- name: job_states
-- Status of several jobs at once (result sets, waiting in get()).
SELECT id, status, error_type FROM dbqueue_jobs WHERE id IN :ids

-- name: forget
-- Delete a finished job and its result (AsyncResult.forget).
DELETE FROM dbqueue_jobs
WHERE id = :id AND status IN ('completed', 'failed', 'cancelled')

-- name: purge
-- Delete jobs waiting to run in the given queues (dbqueue purge). Fan-out children stay: their
-- parent waits for them (revoke the parent to cancel a workflow).
DELETE FROM dbqueue_jobs
WHERE status IN ('pending', 'retrying') AND queue IN :queues AND fan_out_id IS NULL

-- name: purge_all
-- Delete every job waiting to run, whatever its queue, except fan-out children.
DELETE FROM dbqueue_jobs WHERE status IN ('pending', 'retrying') AND fan_out_id IS NULL

-- name: queue_counts
-- Number of jobs per queue and status (dbqueue status).
SELECT queue, status, COUNT(*) AS n FROM dbqueue_jobs GROUP BY queue, status

-- name: next_run_at
-- When the earliest job not yet due becomes due, so an idle worker sleeps exactly that long.
SELECT MIN(run_at) FROM dbqueue_jobs
WHERE status IN ('pending', 'retrying') AND queue IN :queues AND run_at > {now}
  AND queue NOT IN (SELECT name FROM dbqueue_queues WHERE paused)

-- name: prune
-- Delete up to :limit finished jobs older than :cutoff (result_expires), with their
-- checkpoints and fan-outs (foreign keys cascade). A fan-out child stays while its parent is
-- live: the parent reads its result when it replays.
DELETE FROM dbqueue_jobs WHERE id IN (
    SELECT id FROM dbqueue_jobs j
    WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < :cutoff
      AND (fan_out_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM dbqueue_jobs p
          WHERE p.id = j.parent_id AND p.status NOT IN ('completed', 'failed', 'cancelled')
      ))
    LIMIT :limit
)

-- name: register_worker
-- A worker announces itself; its heartbeat keeps its jobs from being reaped.
INSERT INTO dbqueue_workers (id, name, hostname, pid, queues, concurrency, pool, info,
                             started_at, heartbeat_at)
VALUES (:id, :name, :hostname, :pid, :queues, :concurrency, :pool, :info, {now}, {now})

-- name: heartbeat
-- One statement per worker per interval: proof of life for every job the worker runs.
UPDATE dbqueue_workers SET heartbeat_at = {now} WHERE id = :id

-- name: unregister_worker
-- A worker that shut down cleanly leaves the registry.
DELETE FROM dbqueue_workers WHERE id = :id

-- name: live_workers
-- Workers that heartbeated within :age seconds.
SELECT id, name, hostname, pid, queues, concurrency, pool, info, started_at, heartbeat_at,
       (SELECT COUNT(*) FROM dbqueue_jobs j WHERE j.status = 'running' AND j.worker = w.id)
       AS running
FROM dbqueue_workers w WHERE heartbeat_at > {now} - :age ORDER BY name

-- name: forget_dead_workers
-- Drop registry rows of workers silent for :age seconds that hold no running job.
DELETE FROM dbqueue_workers
WHERE heartbeat_at < {now} - :age
  AND NOT EXISTS (SELECT 1 FROM dbqueue_jobs j WHERE j.status = 'running' AND j.worker = dbqueue_workers.id)

-- name: now
-- The database clock.
SELECT {now}
