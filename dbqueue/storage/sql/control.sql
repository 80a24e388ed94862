-- Pause, resume and stop (jobs, queues, workers), and the cross-process event stream.
-- Loaded after common.sql; a dialect file overrides a statement by name.

-- name: pause_job
-- pending/retrying/waiting -> paused, remembering the status to restore on resume and the
-- mode in control (MySQL assigns left to right: resume_status reads status before it changes).
UPDATE dbqueue_jobs SET resume_status = status, status = 'paused', control = :control
WHERE id = :id AND status IN ('pending', 'retrying', 'waiting')

-- name: request_pause
-- A running job: ask the worker holding it to pause it. Graceful: the run finishes, a retry is
-- held (retry -> paused). Aggressive: the worker stops the run (release -> paused). An
-- aggressive request is never weakened to a graceful one. On a paused job control keeps the
-- mode it was paused with, until resumed.
UPDATE dbqueue_jobs
SET control = CASE WHEN control = 'pause_aggressive' THEN control ELSE :control END
WHERE id = :id AND status = 'running'

-- name: resume_job
-- paused -> the status it was paused in (pending, retrying or waiting). A parent paused while
-- waiting whose fan-outs were all decided meanwhile (its wake found it paused) comes back
-- pending, to replay and collect them.
UPDATE dbqueue_jobs
SET status = CASE
        WHEN resume_status = 'waiting' AND NOT EXISTS (
            SELECT 1 FROM dbqueue_fan_outs f
            WHERE f.parent_id = dbqueue_jobs.id AND f.status = 'pending'
        ) THEN 'pending'
        ELSE COALESCE(resume_status, 'pending')
    END,
    resume_status = NULL, control = NULL
WHERE id = :id AND status = 'paused'

-- name: withdraw_pause
-- A running job whose pause has not landed yet: forget the request (resume before it paused).
UPDATE dbqueue_jobs SET control = NULL
WHERE id = :id AND status = 'running' AND control IS NOT NULL

-- name: job_control_state
-- What pause and resume need to know about one job, to explain a refusal.
SELECT status, resume_status, control, queue FROM dbqueue_jobs WHERE id = :id

-- name: paused_jobs
-- Paused jobs, oldest first.
SELECT id, task, queue, resume_status, control FROM dbqueue_jobs
WHERE status = 'paused' ORDER BY created_at, id

-- name: paused_jobs_in
-- Paused jobs of one queue, oldest first.
SELECT id, task, queue, resume_status, control FROM dbqueue_jobs
WHERE status = 'paused' AND queue = :queue ORDER BY created_at, id

-- name: landed_pauses
-- Which of these jobs a retry or release just paused (a pause requested while they ran), and
-- in which mode: the worker announces them.
SELECT id, control FROM dbqueue_jobs WHERE id IN :ids AND status = 'paused'

-- name: pause_queue
-- Pause a queue for every worker: an upsert, so two processes pausing it at once never clash.
INSERT INTO dbqueue_queues (name, paused, updated_at) VALUES (:name, TRUE, {now})
ON CONFLICT (name) DO UPDATE SET paused = TRUE, updated_at = {now}

-- name: resume_queue
-- Resume a queue (a queue with no row was never paused).
UPDATE dbqueue_queues SET paused = FALSE, updated_at = {now} WHERE name = :name

-- name: queue_is_paused
-- One queue's pause flag.
SELECT name FROM dbqueue_queues WHERE name = :name AND paused

-- name: paused_queues
-- Every paused queue.
SELECT name FROM dbqueue_queues WHERE paused ORDER BY name

-- name: pause_worker
-- Pause (mode graceful/aggressive) or resume (mode NULL) workers by name or id; each worker
-- reads its row at its next control pass (at once on PostgreSQL, which is notified).
UPDATE dbqueue_workers SET pause_mode = :mode WHERE name = :name OR id = :name

-- name: control_requests
-- A worker's control pass, one read per interval: requests on the jobs it holds (a pause, a
-- termination, a revoke or a takeover), its own pause mode, the paused queues and the number
-- of live event subscribers.
SELECT 'job' AS kind, id AS name, COALESCE(control, status) AS value FROM dbqueue_jobs
WHERE id IN :ids AND (control IS NOT NULL OR status <> 'running' OR worker <> :worker)
UNION ALL
SELECT 'worker', id, pause_mode FROM dbqueue_workers WHERE id = :worker
UNION ALL
SELECT 'queue', name, NULL FROM dbqueue_queues WHERE paused
UNION ALL
SELECT 'subscriber', id, NULL FROM dbqueue_subscribers WHERE heartbeat_at > {now} - :age

-- name: register_subscriber
-- A process starts following the event stream.
INSERT INTO dbqueue_subscribers (id, started_at, heartbeat_at) VALUES (:id, {now}, {now})

-- name: subscriber_heartbeat
-- A subscriber is still following; no row means it was presumed gone and must register again.
UPDATE dbqueue_subscribers SET heartbeat_at = {now} WHERE id = :id

-- name: unregister_subscriber
-- A subscriber stopped following.
DELETE FROM dbqueue_subscribers WHERE id = :id

-- name: forget_dead_subscribers
-- Subscribers silent for :age seconds (their process died).
DELETE FROM dbqueue_subscribers WHERE heartbeat_at < {now} - :age

-- name: count_subscribers
-- Live subscribers: whether publishing events is worth a write.
SELECT COUNT(*) FROM dbqueue_subscribers WHERE heartbeat_at > {now} - :age

-- name: insert_event
-- Publish events: run with many parameter sets, one multi-row INSERT per batch.
INSERT INTO dbqueue_events (created_at, body) VALUES ({now}, :body)

-- name: read_events
-- Events after a sequence number, in order.
SELECT seq, body FROM dbqueue_events WHERE seq > :after ORDER BY seq LIMIT :limit

-- name: last_event_seq
-- Where a new subscriber starts reading (live events only, no history).
SELECT MAX(seq) FROM dbqueue_events

-- name: prune_events
-- Events older than :age seconds: every subscriber has read them long ago.
DELETE FROM dbqueue_events WHERE created_at < {now} - :age
