-- Pause, resume and stop (jobs, queues, workers) and the cross-process event stream.
-- resume_status: the status a paused job returns to. control: a request to the worker holding
-- a running job (pause_graceful, pause_aggressive, or terminate on a cancelled one).
ALTER TABLE dbqueue_jobs ADD COLUMN resume_status varchar(16), ADD COLUMN control varchar(16);
-- Listing paused jobs, by queue.
CREATE INDEX dbqueue_jobs_paused ON dbqueue_jobs (queue) WHERE status = 'paused';

-- A worker's pause mode (graceful or aggressive), NULL while it runs; any process may set it.
ALTER TABLE dbqueue_workers ADD COLUMN pause_mode varchar(16);

-- Processes following app.events(); workers publish job events only while one is alive.
CREATE TABLE dbqueue_subscribers (
    id            varchar(64) PRIMARY KEY,
    started_at    double precision NOT NULL,
    heartbeat_at  double precision NOT NULL
);

-- The event stream where there is no LISTEN/NOTIFY (or broker_notify is off): a short-lived,
-- pruned log that subscribers read by sequence number.
CREATE TABLE dbqueue_events (
    seq           bigserial PRIMARY KEY,
    created_at    double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp())),
    body          text NOT NULL
);
CREATE INDEX dbqueue_events_created ON dbqueue_events (created_at);
