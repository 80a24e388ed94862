-- SQLite statements for durable workflows (override durable.sql by name). Every write
-- transaction holds the database's write lock from its start (BEGIN IMMEDIATE), so the
-- row locks the other dialects take are implied: these are the same reads without them.

-- name: lock_fan_out
-- The decision of one fan-out (a parent about to suspend again for it).
SELECT status FROM dbqueue_fan_outs WHERE id = :id

-- name: lock_fan_outs
-- Fan-outs whose children just finished, to count them and decide.
SELECT id, parent_id, strategy, needed, total, completed, failed, cancelled, status
FROM dbqueue_fan_outs WHERE id IN :ids ORDER BY id

-- name: lock_owned
-- Of these jobs, those this worker still holds.
SELECT id FROM dbqueue_jobs
WHERE id IN :ids AND worker = :worker AND status = 'running'

-- name: lock_live_children
-- Unfinished children of decided fan-outs.
SELECT id, fan_out_id, status FROM dbqueue_jobs
WHERE id BETWEEN :low AND :high AND fan_out_id = :fan_out_id
  AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')

-- name: lock_revoked
-- Before a revoke: which of the jobs are fan-out children or waiting parents.
SELECT id, fan_out_id, status FROM dbqueue_jobs
WHERE id IN :ids AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')
  AND (fan_out_id IS NOT NULL OR status = 'waiting')

-- name: lock_orphaned_fan_outs
-- Undecided fan-outs that cancel with their parent, of these (cancelled or failed) parents.
SELECT id FROM dbqueue_fan_outs
WHERE parent_id IN :parent_ids AND status = 'pending' AND cancel_on_parent_failure = TRUE

-- name: lock_timed_out
-- Undecided fan-outs past their deadline.
SELECT id, parent_id FROM dbqueue_fan_outs
WHERE status = 'pending' AND timeout_at <= {now}
ORDER BY id LIMIT :limit
