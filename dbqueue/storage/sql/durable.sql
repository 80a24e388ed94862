-- Durable workflows: checkpoints of calls and phases, fan-outs and their children.
-- Dialect files (durable_postgresql.sql, durable_mysql.sql, durable_sqlite.sql) override by name.
-- Lock order, everywhere: child job rows, then fan-out rows (by id), then the parent's job row.

-- name: load_checkpoints
-- Every checkpoint of a job, read once when a job that has any starts replaying.
SELECT call_index, call_type, result, content_type, error_type, error
FROM dbqueue_checkpoints WHERE job_id = :job_id ORDER BY call_index

-- name: flag_checkpointed
-- Mark a running job as having checkpoints (its claim then tells the next run to load them).
UPDATE dbqueue_jobs SET checkpointed = TRUE
WHERE id = :job_id AND worker = :worker AND status = 'running'

-- name: save_checkpoint
-- Record a call's result or a phase's value, only while this worker still holds the job.
-- A phase saved again replaces its value.
INSERT INTO dbqueue_checkpoints (
    job_id, call_index, call_type, result, content_type, error_type, error, created_at
)
SELECT id, :call_index, :call_type, :result, :content_type, :error_type, :error, {now}
FROM dbqueue_jobs WHERE id = :job_id AND worker = :worker AND status = 'running'
ON CONFLICT (job_id, call_index, call_type) DO UPDATE
SET result = excluded.result, content_type = excluded.content_type,
    error_type = excluded.error_type, error = excluded.error, created_at = excluded.created_at

-- name: insert_checkpoint
-- A fan-out's checkpoint (its id at the parent's call position), written with the suspend.
INSERT INTO dbqueue_checkpoints (
    job_id, call_index, call_type, result, content_type, error_type, error, created_at
) VALUES (:job_id, :call_index, :call_type, :result, :content_type, NULL, NULL, {now})

-- name: suspend
-- running -> waiting: the parent frees its worker until its fan-out is decided. The run is
-- not a failure, so its attempt is given back; the fan-out's checkpoint is in the same
-- transaction, hence the flag.
UPDATE dbqueue_jobs
SET status = 'waiting', attempt = attempt - 1, worker = NULL, checkpointed = TRUE
WHERE id = :id AND worker = :worker AND status = 'running'

-- name: wake
-- waiting -> pending, once: only the transaction that decides the fan-out runs it.
UPDATE dbqueue_jobs SET status = 'pending', run_at = {now}, worker = NULL
WHERE id = :id AND status = 'waiting'

-- name: insert_fan_out
-- A new fan-out, undecided, with no child finished yet (a NULL :timeout means no deadline).
INSERT INTO dbqueue_fan_outs (
    id, parent_id, call_index, strategy, threshold, needed, total, timeout_at,
    cancel_on_parent_failure, keyed_children
) VALUES (
    :id, :parent_id, :call_index, :strategy, :threshold, :needed, :total,
    {now} + :timeout, :cancel_on_parent_failure, TRUE
)

-- name: insert_children
-- A fan-out's children (bulk: the driver turns this into one multi-row INSERT on MySQL).
INSERT INTO dbqueue_jobs (
    id, task, queue, priority, status, payload, content_type, max_retries,
    run_at, expires_at, parent_id, root_id, options, fan_out_id, fan_out_index
) VALUES (
    :id, :task, :queue, :priority, 'pending', :payload, :content_type, :max_retries,
    :run_at, :expires_at, :parent_id, :root_id, :options, :fan_out_id, :fan_out_index
)

-- name: fan_out_exists
-- Whether a fan-out was stored (recognises a spawn whose commit acknowledgement was lost).
SELECT 1 FROM dbqueue_fan_outs WHERE id = :id

-- name: get_fan_out
-- One fan-out: its strategy, counts and decision.
SELECT id, parent_id, call_index, strategy, threshold, needed, total, completed, failed,
       cancelled, status, timeout_at, cancel_on_parent_failure, created_at, decided_at,
       keyed_children
FROM dbqueue_fan_outs WHERE id = :id

-- name: lock_fan_out
-- The decision of one fan-out, locked: a parent about to suspend again for it waits for any
-- transaction that is counting its children.
SELECT status FROM dbqueue_fan_outs WHERE id = :id FOR UPDATE

-- name: fan_out_totals
-- How many children these fan-outs have (their ids follow from it: fanouts.child_range).
SELECT id, total, keyed_children FROM dbqueue_fan_outs WHERE id IN :ids

-- name: lock_fan_outs
-- Fan-outs whose children just finished, locked in id order, to count them and decide.
SELECT id, parent_id, strategy, needed, total, completed, failed, cancelled, status
FROM dbqueue_fan_outs WHERE id IN :ids ORDER BY id FOR UPDATE

-- name: count_fan_out
-- Store a fan-out's new counts and, the first time it is decided, its decision.
UPDATE dbqueue_fan_outs
SET completed = :completed, failed = :failed, cancelled = :cancelled, status = :status,
    decided_at = CASE WHEN :decided = 1 THEN {now} ELSE decided_at END
WHERE id = :id

-- name: decide_fan_out
-- pending -> the strategy's decision, for a fan-out whose counts were just raised.
UPDATE dbqueue_fan_outs SET status = :status, decided_at = {now}
WHERE id = :id AND status = 'pending'

-- name: fan_out_children
-- A fan-out's children with their results or errors, by primary-key range (a child's id is
-- its fan-out's prefix and its index: fanouts.child_range); the caller places them by
-- fan_out_index, so the database need not sort them.
SELECT fan_out_index, id, task, status, result, result_type, error_type, error, traceback
FROM dbqueue_jobs WHERE id BETWEEN :low AND :high AND fan_out_id = :fan_out_id

-- name: lock_owned
-- Of these jobs, those this worker still holds, locked: finishing fan-out children must know
-- exactly which rows this transaction moves, to count each child once.
SELECT id FROM dbqueue_jobs
WHERE id IN :ids AND worker = :worker AND status = 'running'
ORDER BY id FOR UPDATE

-- name: lock_live_children
-- Unfinished children of decided fan-outs, locked; rows another transaction is finishing
-- right now are skipped (they finish, and count, by themselves).
SELECT id, fan_out_id, status FROM dbqueue_jobs
WHERE id BETWEEN :low AND :high AND fan_out_id = :fan_out_id
  AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')
ORDER BY id
FOR UPDATE SKIP LOCKED

-- name: cancel_jobs
-- live -> cancelled for children whose fan-out no longer needs them; a running one's worker
-- is told to stop it (control = terminate) and its outcome is discarded. control is assigned
-- before status (MySQL assigns left to right).
UPDATE dbqueue_jobs
SET control = CASE WHEN status = 'running' THEN 'terminate' ELSE control END,
    status = 'cancelled', error_type = 'dbqueue.exceptions.TaskRevokedError', error = :reason,
    finished_at = {now}
WHERE id IN :ids AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')

-- name: lock_revoked
-- Before a revoke: which of the jobs are fan-out children or waiting parents, locked.
SELECT id, fan_out_id, status FROM dbqueue_jobs
WHERE id IN :ids AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')
  AND (fan_out_id IS NOT NULL OR status = 'waiting')
ORDER BY id FOR UPDATE

-- name: lock_orphaned_fan_outs
-- Undecided fan-outs that cancel with their parent, of these (cancelled or failed) parents.
SELECT id FROM dbqueue_fan_outs
WHERE parent_id IN :parent_ids AND status = 'pending' AND cancel_on_parent_failure = TRUE
ORDER BY id FOR UPDATE

-- name: cancel_fan_outs
-- pending -> cancelled: the parent is gone, so the fan-out's children are not needed.
UPDATE dbqueue_fan_outs SET status = 'cancelled', decided_at = {now}
WHERE id IN :ids AND status = 'pending'

-- name: lock_timed_out
-- Undecided fan-outs past their deadline, locked (skipping those being counted right now).
SELECT id, parent_id FROM dbqueue_fan_outs
WHERE status = 'pending' AND timeout_at <= {now}
ORDER BY id LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: time_out_fan_outs
-- pending -> timed_out: the deadline passed before the strategy was decided.
UPDATE dbqueue_fan_outs SET status = 'timed_out', decided_at = {now}
WHERE id IN :ids AND status = 'pending'

-- name: stranded_parents
-- Recovery: waiting parents none of whose fan-outs is still undecided (a crash or a race
-- left them unwoken).
SELECT id FROM dbqueue_jobs j
WHERE status = 'waiting'
  AND NOT EXISTS (
      SELECT 1 FROM dbqueue_fan_outs f WHERE f.parent_id = j.id AND f.status = 'pending'
  )
LIMIT :limit

-- name: wake_stranded
-- Recovery: waiting -> pending for a stranded parent, unless it waits on a new fan-out by now.
UPDATE dbqueue_jobs SET status = 'pending', run_at = {now}, worker = NULL
WHERE id = :id AND status = 'waiting'
  AND NOT EXISTS (
      SELECT 1 FROM dbqueue_fan_outs f WHERE f.parent_id = :id AND f.status = 'pending'
  )

-- name: unsettled_fan_outs
-- Recovery: decided fan-outs with children still unfinished (to cancel them).
SELECT id FROM dbqueue_fan_outs
WHERE status <> 'pending' AND completed + failed + cancelled < total
LIMIT :limit

-- name: orphaned_fan_outs
-- Recovery: undecided fan-outs that cancel with their parent, whose parent failed or was
-- cancelled.
SELECT f.parent_id FROM dbqueue_fan_outs f
JOIN dbqueue_jobs p ON p.id = f.parent_id
WHERE f.status = 'pending' AND f.cancel_on_parent_failure = TRUE
  AND p.status IN ('failed', 'cancelled')
LIMIT :limit

-- name: recount_candidates
-- Recovery: undecided fan-outs older than :age seconds, in id order after :after (a cursor
-- that goes round, so every one is looked at in turn).
SELECT id, total, keyed_children FROM dbqueue_fan_outs
WHERE status = 'pending' AND created_at < {now} - :age AND id > :after
ORDER BY id LIMIT :limit

-- name: live_child
-- One unfinished child of a fan-out, if any (the scan of its key range stops there).
SELECT id FROM dbqueue_jobs
WHERE id BETWEEN :low AND :high AND fan_out_id = :fan_out_id
  AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused')
LIMIT 1

-- name: child_counts
-- A fan-out's children by status, read from their rows (the recount of a miscounted fan-out).
SELECT status, COUNT(*) AS n FROM dbqueue_jobs
WHERE id BETWEEN :low AND :high AND fan_out_id = :fan_out_id
GROUP BY status
