-- Pause, resume and stop (jobs, queues, workers) and the cross-process event stream.
-- resume_status: the status a paused job returns to. control: a request to the worker holding
-- a running job (pause_graceful, pause_aggressive, or terminate on a cancelled one).
ALTER TABLE dbqueue_jobs ADD COLUMN resume_status TEXT;
ALTER TABLE dbqueue_jobs ADD COLUMN control TEXT;
-- Listing paused jobs, by queue.
CREATE INDEX dbqueue_jobs_paused ON dbqueue_jobs (queue) WHERE status = 'paused';

-- A worker's pause mode (graceful or aggressive), NULL while it runs; any process may set it.
ALTER TABLE dbqueue_workers ADD COLUMN pause_mode TEXT;

-- Processes following app.events(); workers publish job events only while one is alive.
CREATE TABLE dbqueue_subscribers (
    id            TEXT PRIMARY KEY,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);

-- The event stream: a short-lived, pruned log that subscribers read by sequence number.
CREATE TABLE dbqueue_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    body          TEXT NOT NULL
);
CREATE INDEX dbqueue_events_created ON dbqueue_events (created_at);
