-- PostgreSQL statements for durable workflows (override durable.sql by name).

-- name: save_checkpoint
-- Record a call's result or a phase's value in one round trip, only while this worker still
-- holds the job; the job's first checkpoint also flags the job row. A phase saved again
-- replaces its value. Returns a row when written.
WITH owner AS (
    SELECT id, checkpointed FROM dbqueue_jobs
    WHERE id = :job_id AND worker = :worker AND status = 'running'
), flag AS (
    UPDATE dbqueue_jobs AS j SET checkpointed = TRUE
    FROM owner WHERE j.id = owner.id AND NOT owner.checkpointed
)
INSERT INTO dbqueue_checkpoints (
    job_id, call_index, call_type, result, content_type, error_type, error, created_at
)
SELECT owner.id, :call_index, :call_type, :result, :content_type, :error_type, :error, {now}
FROM owner
ON CONFLICT (job_id, call_index, call_type) DO UPDATE
SET result = excluded.result, content_type = excluded.content_type,
    error_type = excluded.error_type, error = excluded.error, created_at = excluded.created_at
RETURNING 1

-- name: wake_notify
-- waiting -> pending, once, and wake idle workers of the parent's queue.
WITH woken AS (
    UPDATE dbqueue_jobs SET status = 'pending', run_at = {now}, worker = NULL
    WHERE id = :id AND status = 'waiting'
    RETURNING queue
)
SELECT pg_notify('dbqueue_jobs', queue) FROM woken
