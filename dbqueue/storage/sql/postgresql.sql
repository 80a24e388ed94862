-- PostgreSQL statements (override common.sql by name).
-- Lists are passed as arrays (= ANY(:x)), so each statement has one prepared plan.

-- name: insert_job_notify
-- Enqueue one job and wake idle workers of its queue, in one round trip. A job that conflicts
-- with a live unique key (or an id already stored) inserts nothing and notifies nobody.
WITH inserted AS (
    INSERT INTO dbqueue_jobs (
        id, task, queue, priority, status, payload, content_type, max_retries,
        run_at, expires_at, unique_key, parent_id, root_id, options
    ) VALUES (
        :id, :task, :queue, :priority, 'pending', :payload, :content_type, :max_retries,
        COALESCE(:run_at, {now} + :delay), :expires_at, :unique_key, :parent_id, :root_id,
        :options
    )
    ON CONFLICT DO NOTHING
    RETURNING queue
)
SELECT pg_notify('dbqueue_jobs', queue) FROM inserted

-- name: claim
-- pending/retrying -> running for up to :limit due jobs of the given queues, highest priority
-- first, skipping rows other workers hold and queues that are paused. Each queue is read in
-- index order (LATERAL), so a claim costs the same with ten or ten million jobs waiting.
-- MATERIALIZED keeps the locking subquery from being re-evaluated (which would over-claim).
WITH picked AS MATERIALIZED (
    SELECT c.id FROM unnest(CAST(:queues AS text[])) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM dbqueue_jobs
        WHERE status IN ('pending', 'retrying') AND queue = q.name AND run_at <= {now}
        ORDER BY priority DESC, run_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE q.name NOT IN (SELECT name FROM dbqueue_queues WHERE paused)
    ORDER BY c.priority DESC, c.run_at
    LIMIT :limit
)
UPDATE dbqueue_jobs AS j
SET status = 'running', worker = :worker, attempt = j.attempt + 1, started_at = {now}
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.task, j.queue, j.priority, j.payload, j.content_type, j.attempt,
          j.max_retries, j.run_at, j.expires_at, j.created_at, j.parent_id, j.root_id,
          j.options, {now} AS now, j.fan_out_id, j.checkpointed

-- name: notify_done
-- Wake AsyncResult.get() waiters: payload is the finished job ids, comma separated.
SELECT pg_notify('dbqueue_done', :ids)

-- name: reap
-- running -> pending (or failed once the retry budget is spent) for jobs whose worker stopped
-- heartbeating :age seconds ago. The lost run counts as an attempt, so a job that keeps
-- killing its worker ends failed instead of looping forever. A job whose pause was requested
-- (control) goes to paused instead of pending.
WITH lost AS MATERIALIZED (
    SELECT id FROM dbqueue_jobs j
    WHERE status = 'running'
      AND NOT EXISTS (
          SELECT 1 FROM dbqueue_workers w WHERE w.id = j.worker AND w.heartbeat_at > {now} - :age
      )
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE dbqueue_jobs AS j
SET status = CASE WHEN j.max_retries IS NOT NULL AND j.attempt > j.max_retries THEN 'failed'
                  WHEN j.control IS NOT NULL THEN 'paused' ELSE 'pending' END,
    resume_status = CASE WHEN j.control IS NOT NULL THEN 'pending' ELSE j.resume_status END,
    error_type = 'dbqueue.exceptions.WorkerLostError',
    error = 'Worker exited prematurely: worker ' || COALESCE(j.worker, '?')
            || ' stopped heartbeating during attempt ' || j.attempt,
    finished_at = CASE WHEN j.max_retries IS NOT NULL AND j.attempt > j.max_retries
                       THEN {now} END,
    worker = NULL
FROM lost
WHERE j.id = lost.id
RETURNING j.id, j.task, j.status, j.attempt, j.fan_out_id

-- name: complete_many
-- running -> completed for a whole batch in one statement; returns the ids still owned.
UPDATE dbqueue_jobs AS j
SET status = 'completed', result = v.result, result_type = v.result_type,
    error_type = v.error_type, error = NULL, traceback = NULL, finished_at = {now}
FROM unnest(CAST(:ids AS text[]), CAST(:results AS bytea[]), CAST(:result_types AS text[]),
            CAST(:error_types AS text[])) AS v(id, result, result_type, error_type)
WHERE j.id = v.id AND j.worker = :worker AND j.status = 'running'
RETURNING j.id

-- name: complete_bare_many
-- running -> completed for a batch of jobs that store no result (the common case): only their
-- ids travel. Returns the ids still owned.
UPDATE dbqueue_jobs AS j
SET status = 'completed', result = NULL, result_type = NULL, error_type = NULL, error = NULL,
    traceback = NULL, finished_at = {now}
FROM unnest(CAST(:ids AS text[])) AS v(id)
WHERE j.id = v.id AND j.worker = :worker AND j.status = 'running'
RETURNING j.id

-- name: current_schema
-- The schema the tables live in: notification channels are database-wide, so events say
-- which schema's app they belong to.
SELECT current_schema()

-- name: notify_events
-- Publish events: {"scope": schema, "events": [...]} under 8000 bytes. Run with one parameter
-- set per payload (executemany: one round trip; an array parameter costs far more to encode).
SELECT pg_notify('dbqueue_events', :payload)

-- name: notify_control
-- Tell every worker to run its control pass now (a pause, resume or termination was written).
SELECT pg_notify('dbqueue_control', :payload)

-- name: notify_queue
-- Wake idle workers of a queue that has claimable jobs again (a resumed queue or job).
SELECT pg_notify('dbqueue_jobs', :queue)
