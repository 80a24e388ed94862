-- SQLite statements (override common.sql by name).
-- Writes run inside BEGIN IMMEDIATE, so exactly one process claims at a time: several worker
-- processes can share one database file safely.

-- name: claim
-- pending/retrying -> running for up to :limit due jobs of the given queues, highest priority
-- first, skipping paused queues.
UPDATE dbqueue_jobs
SET status = 'running', worker = :worker, attempt = attempt + 1, started_at = {now}
WHERE id IN (
    SELECT id FROM dbqueue_jobs
    WHERE status IN ('pending', 'retrying')
      AND queue IN :queues
      AND run_at <= {now}
      AND queue NOT IN (SELECT name FROM dbqueue_queues WHERE paused)
    ORDER BY priority DESC, run_at
    LIMIT :limit
)
RETURNING id, task, queue, priority, payload, content_type, attempt, max_retries, run_at,
          expires_at, created_at, parent_id, root_id, options, {now} AS now, fan_out_id,
          checkpointed

-- name: reap
-- running -> pending (or failed once the retry budget is spent) for jobs whose worker stopped
-- heartbeating :age seconds ago; the lost run counts as an attempt. A job whose pause was
-- requested (control) goes to paused instead of pending.
UPDATE dbqueue_jobs
SET status = CASE WHEN max_retries IS NOT NULL AND attempt > max_retries THEN 'failed'
                  WHEN control IS NOT NULL THEN 'paused' ELSE 'pending' END,
    resume_status = CASE WHEN control IS NOT NULL THEN 'pending' ELSE resume_status END,
    error_type = 'dbqueue.exceptions.WorkerLostError',
    error = 'Worker exited prematurely: worker ' || COALESCE(worker, '?')
            || ' stopped heartbeating during attempt ' || attempt,
    finished_at = CASE WHEN max_retries IS NOT NULL AND attempt > max_retries
                       THEN {now} END,
    worker = NULL
WHERE id IN (
    SELECT id FROM dbqueue_jobs j
    WHERE status = 'running'
      AND NOT EXISTS (
          SELECT 1 FROM dbqueue_workers w WHERE w.id = j.worker AND w.heartbeat_at > {now} - :age
      )
    LIMIT :limit
)
RETURNING id, task, status, attempt, fan_out_id

-- name: schedule_lock
-- One schedule; the write transaction's BEGIN IMMEDIATE already locks it.
SELECT name, task, queue, kind, expression, timezone, spec, args, kwargs, options, payload,
       content_type, job, catch_up, enabled, next_fire_at, version
FROM dbqueue_schedules WHERE name = :name
