-- MySQL 8 / MariaDB 10.6+ statements (override common.sql by name).
-- There is no UPDATE ... RETURNING, so claims and reaps lock rows with SELECT ... FOR UPDATE
-- SKIP LOCKED and update them by id inside the same transaction. claim_queue and
-- live_unique_key are stored generated columns standing in for partial indexes.

-- name: insert_job
-- Enqueue one job; a live unique key raises a duplicate-key error the storage layer resolves.
INSERT INTO dbqueue_jobs (
    id, task, queue, priority, status, payload, content_type, max_retries,
    run_at, expires_at, unique_key, parent_id, root_id, options
) VALUES (
    :id, :task, :queue, :priority, 'pending', :payload, :content_type, :max_retries,
    COALESCE(:run_at, {now} + :delay), :expires_at, :unique_key, :parent_id, :root_id, :options
)

-- name: claim_lock
-- Lock up to :limit due jobs of the given queues, highest priority first, skipping rows other
-- workers hold and paused queues.
SELECT id, task, queue, priority, payload, content_type, attempt, max_retries, run_at,
       expires_at, created_at, parent_id, root_id, options, {now} AS now, fan_out_id,
       checkpointed
FROM dbqueue_jobs
WHERE claim_queue IN :queues
  AND run_at <= {now}
  AND queue NOT IN (SELECT name FROM dbqueue_queues WHERE paused)
ORDER BY priority DESC, run_at
LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: claim
-- pending/retrying -> running for the rows claim_lock locked.
UPDATE dbqueue_jobs
SET status = 'running', worker = :worker, attempt = attempt + 1, started_at = {now}
WHERE id IN :ids

-- name: reap_lock
-- Lock running jobs whose worker stopped heartbeating :age seconds ago.
SELECT id FROM dbqueue_jobs j
WHERE status = 'running'
  AND NOT EXISTS (
      SELECT 1 FROM dbqueue_workers w WHERE w.id = j.worker AND w.heartbeat_at > {now} - :age
  )
LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: reap
-- running -> pending (or failed once the retry budget is spent) for the rows reap_lock locked;
-- the lost run counts as an attempt; a job whose pause was requested (control) goes to paused.
-- MySQL assigns left to right: resume_status reads the new status, worker is cleared last.
UPDATE dbqueue_jobs
SET error = CONCAT('Worker exited prematurely: worker ', COALESCE(worker, '?'),
                   ' stopped heartbeating during attempt ', attempt),
    error_type = 'dbqueue.exceptions.WorkerLostError',
    finished_at = CASE WHEN max_retries IS NOT NULL AND attempt > max_retries
                       THEN {now} END,
    status = CASE WHEN max_retries IS NOT NULL AND attempt > max_retries THEN 'failed'
                  WHEN control IS NOT NULL THEN 'paused' ELSE 'pending' END,
    resume_status = CASE WHEN status = 'paused' THEN 'pending' ELSE resume_status END,
    worker = NULL
WHERE id IN :ids

-- name: reaped
-- What the reap left behind, for logging and signals.
SELECT id, task, status, attempt, fan_out_id FROM dbqueue_jobs WHERE id IN :ids

-- name: prune
-- Delete up to :limit finished jobs older than :cutoff (result_expires), with their
-- checkpoints and fan-outs (foreign keys cascade). A fan-out child stays while its parent is
-- live. The ids go through a derived table: MySQL cannot read the table it deletes from.
DELETE FROM dbqueue_jobs WHERE id IN (
    SELECT id FROM (
        SELECT j.id FROM dbqueue_jobs j
        WHERE j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < :cutoff
          AND (j.fan_out_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM dbqueue_jobs p
              WHERE p.id = j.parent_id AND p.status NOT IN ('completed', 'failed', 'cancelled')
          ))
        LIMIT :limit
    ) AS doomed
)

-- name: insert_jobs
-- Bulk enqueue: only placeholders inside VALUES, so the driver sends one multi-row INSERT.
INSERT INTO dbqueue_jobs (
    id, task, queue, priority, status, payload, content_type, max_retries,
    run_at, expires_at, unique_key, parent_id, root_id, options
) VALUES (
    :id, :task, :queue, :priority, :status, :payload, :content_type, :max_retries,
    :run_at, :expires_at, :unique_key, :parent_id, :root_id, :options
)

-- name: pause_queue
-- Pause a queue for every worker: an upsert, so two processes pausing it at once never clash.
INSERT INTO dbqueue_queues (name, paused, updated_at) VALUES (:name, TRUE, {now})
ON DUPLICATE KEY UPDATE paused = TRUE, updated_at = {now}

-- name: schedule_insert
-- Register a schedule the first time any process sees it; a row already there (a racing
-- registration's) is left alone.
INSERT INTO dbqueue_schedules (
    name, task, queue, kind, expression, timezone, spec, args, kwargs, options, payload,
    content_type, job, catch_up, enabled, next_fire_at, created_at, updated_at
) VALUES (
    :name, :task, :queue, :kind, :expression, :timezone, :spec, :args, :kwargs, :options,
    :payload, :content_type, :job, :catch_up, :enabled, :next_fire_at, {now}, {now}
)
ON DUPLICATE KEY UPDATE name = name
