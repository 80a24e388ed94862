-- MySQL / MariaDB statements for durable workflows (override durable.sql by name).

-- name: save_checkpoint
-- Record a call's result or a phase's value, only while this worker still holds the job.
-- A phase saved again replaces its value.
INSERT INTO dbqueue_checkpoints (
    job_id, call_index, call_type, result, content_type, error_type, error, created_at
)
SELECT id, :call_index, :call_type, :result, :content_type, :error_type, :error, {now}
FROM dbqueue_jobs WHERE id = :job_id AND worker = :worker AND status = 'running'
ON DUPLICATE KEY UPDATE
    result = VALUES(result), content_type = VALUES(content_type),
    error_type = VALUES(error_type), error = VALUES(error), created_at = VALUES(created_at)
