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

-- name: complete_bare_many
-- running -> completed for a batch of jobs that store no result (the common case), in one
-- statement; the caller compares the rows updated with the batch.
UPDATE dbqueue_jobs
SET status = 'completed', result = NULL, result_type = NULL, error_type = NULL, error = NULL,
    traceback = NULL, finished_at = {now}
WHERE id IN :ids AND worker = :worker AND status = 'running'

-- name: fail
-- running -> failed: store the error, its type and traceback.
UPDATE dbqueue_jobs
SET status = 'failed', error_type = :error_type, error = :error, traceback = :traceback,
    finished_at = {now}
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: retry
-- running -> retrying: run again after :delay seconds; keep the last error for inspection.
-- New args (Task.retry(args=...)) replace the payload when given. A job whose pause was
-- requested meanwhile (control, kept as the pause mode) is held: running -> paused, resuming
-- to retrying.
UPDATE dbqueue_jobs
SET status = CASE WHEN control IS NULL THEN 'retrying' ELSE 'paused' END,
    resume_status = CASE WHEN control IS NULL THEN resume_status ELSE 'retrying' END,
    run_at = {now} + :delay, error_type = :error_type, error = :error,
    traceback = :traceback, payload = COALESCE(:payload, payload)
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: release
-- running -> pending without using up the attempt: claimed but never started (shutdown, a
-- pause that landed), stopped (aggressive pause), or rejected with requeue. A job whose pause
-- was requested (control, kept as the pause mode) goes to paused instead, resuming to pending.
UPDATE dbqueue_jobs
SET status = CASE WHEN control IS NULL THEN 'pending' ELSE 'paused' END,
    resume_status = CASE WHEN control IS NULL THEN resume_status ELSE 'pending' END,
    attempt = attempt - 1, worker = NULL, started_at = NULL
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: expire
-- running -> cancelled: the job's expires time passed before it started.
UPDATE dbqueue_jobs
SET status = 'cancelled', error_type = 'dbqueue.exceptions.TaskRevokedError',
    error = 'expired', finished_at = {now}
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: revoke
-- Any live status -> cancelled (AsyncResult.revoke). A running job's outcome is then discarded;
-- with :control = 'terminate' (revoke(terminate=True)) its worker also stops it. control is
-- assigned before status (MySQL assigns left to right).
UPDATE dbqueue_jobs
SET control = CASE WHEN status = 'running' THEN COALESCE(:control, control) ELSE control END,
    status = 'cancelled', error_type = 'dbqueue.exceptions.TaskRevokedError',
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
       resume_status, control, checkpointed, fan_out_id, fan_out_index
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
                             started_at, heartbeat_at, pause_mode)
VALUES (:id, :name, :hostname, :pid, :queues, :concurrency, :pool, :info, {now}, {now},
        :pause_mode)

-- name: heartbeat
-- One statement per worker per interval: proof of life for every job the worker runs.
UPDATE dbqueue_workers SET heartbeat_at = {now} WHERE id = :id

-- name: unregister_worker
-- A worker that shut down cleanly leaves the registry.
DELETE FROM dbqueue_workers WHERE id = :id

-- name: live_workers
-- Workers that heartbeated within :age seconds.
SELECT id, name, hostname, pid, queues, concurrency, pool, info, started_at, heartbeat_at,
       pause_mode,
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

-- Schedules (dbqueue_schedules): one row per periodic job, shared by every scheduler process.
-- Fire times are claimed with a compare-and-set on the row's version, in the same
-- transaction as the job's INSERT, so each fire time enqueues exactly one job.

-- name: schedule_insert
-- Register a schedule the first time any process sees it; a row already there is left alone
-- (schedule_update changes it).
INSERT INTO dbqueue_schedules (
    name, task, queue, kind, expression, timezone, spec, args, kwargs, options, payload,
    content_type, job, catch_up, enabled, next_fire_at, created_at, updated_at
) VALUES (
    :name, :task, :queue, :kind, :expression, :timezone, :spec, :args, :kwargs, :options,
    :payload, :content_type, :job, :catch_up, :enabled, :next_fire_at, {now}, {now}
)
ON CONFLICT (name) DO NOTHING

-- name: schedule_lock
-- One schedule, locked until the transaction ends (registration, enable).
SELECT name, task, queue, kind, expression, timezone, spec, args, kwargs, options, payload,
       content_type, job, catch_up, enabled, next_fire_at, version
FROM dbqueue_schedules WHERE name = :name
FOR UPDATE

-- name: schedule_update
-- The code defines the schedule differently now. The fire cursor moves only when the timing
-- changed; enabled is never touched, so an operator's disable survives a deploy.
UPDATE dbqueue_schedules
SET task = :task, queue = :queue, kind = :kind, expression = :expression,
    timezone = :timezone, spec = :spec, args = :args, kwargs = :kwargs, options = :options,
    payload = :payload, content_type = :content_type, job = :job, catch_up = :catch_up,
    next_fire_at = :next_fire_at, version = version + 1, updated_at = {now}
WHERE name = :name

-- name: schedule_states
-- What a scheduler needs to fire its schedules, and the database clock it measures them by.
SELECT name, task, queue, spec, payload, content_type, job, catch_up, enabled, next_fire_at,
       version, {now} AS now
FROM dbqueue_schedules WHERE name IN :names

-- name: schedule_fire
-- Claim fire time :fire_at (NULL: skip the missed ones) and move the cursor to :next_fire_at,
-- unless another scheduler moved it since we read version :version, or an operator disabled
-- the schedule. The winner inserts the job in the same transaction.
UPDATE dbqueue_schedules
SET next_fire_at = :next_fire_at, last_fire_at = COALESCE(:fire_at, last_fire_at),
    last_job_id = COALESCE(:job_id, last_job_id), total_run_count = total_run_count + :fired,
    version = version + 1
WHERE name = :name AND version = :version AND enabled

-- name: schedule_disable
-- An operator stops a schedule (dbqueue schedules disable): no scheduler fires it any more.
UPDATE dbqueue_schedules
SET enabled = :enabled, version = version + 1, updated_at = {now}
WHERE name = :name

-- name: schedule_enable
-- An operator turns a schedule back on; it fires next at :next_fire_at (the first fire time
-- after now: the time it spent disabled is not caught up).
UPDATE dbqueue_schedules
SET enabled = :enabled, next_fire_at = :next_fire_at, version = version + 1, updated_at = {now}
WHERE name = :name

-- name: schedule_delete
-- Forget a schedule the code no longer defines (dbqueue schedules remove).
DELETE FROM dbqueue_schedules WHERE name = :name

-- name: schedule_list
-- Every stored schedule, for dbqueue schedules and the dashboard.
SELECT name, task, queue, kind, expression, timezone, args, kwargs, options, catch_up, enabled,
       next_fire_at, last_fire_at, last_job_id, total_run_count, created_at, updated_at
FROM dbqueue_schedules ORDER BY name
