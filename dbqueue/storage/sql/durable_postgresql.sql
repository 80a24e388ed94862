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

-- name: complete_children
-- running -> completed for a batch of fan-out children, and their fan-outs' completed counts
-- raised by the rows this statement really moved, in one round trip. Returns the children
-- moved ('job' rows) and the counted fan-outs with their new counts ('fan_out' rows), so the
-- caller decides the strategy.
WITH done AS (
    UPDATE dbqueue_jobs AS j
    SET status = 'completed', result = v.result, result_type = v.result_type,
        error_type = v.error_type, error = NULL, traceback = NULL, finished_at = {now}
    FROM unnest(CAST(:ids AS text[]), CAST(:results AS bytea[]),
                CAST(:result_types AS text[]), CAST(:error_types AS text[]))
         AS v(id, result, result_type, error_type)
    WHERE j.id = v.id AND j.worker = :worker AND j.status = 'running'
    RETURNING j.id, j.fan_out_id
), counts AS (
    SELECT fan_out_id, COUNT(*) AS n FROM done WHERE fan_out_id IS NOT NULL
    GROUP BY fan_out_id ORDER BY fan_out_id
), counted AS (
    UPDATE dbqueue_fan_outs AS f SET completed = f.completed + counts.n
    FROM counts WHERE f.id = counts.fan_out_id
    RETURNING f.id, f.parent_id, f.strategy, f.needed, f.total, f.completed, f.failed,
              f.cancelled, f.status
)
SELECT 'job' AS kind, id, NULL AS parent_id, NULL AS strategy, 0 AS needed, 0 AS total,
       0 AS completed, 0 AS failed, 0 AS cancelled, NULL AS status
FROM done
UNION ALL
SELECT 'fan_out', id, parent_id, strategy, needed, total, completed, failed, cancelled, status
FROM counted
