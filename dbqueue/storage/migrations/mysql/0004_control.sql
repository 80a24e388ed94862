-- Pause, resume and stop (jobs, queues, workers) and the cross-process event stream.
-- resume_status: the status a paused job returns to. control: a request to the worker holding
-- a running job (pause_graceful, pause_aggressive, or terminate on a cancelled one).
-- Paused jobs are listed through dbqueue_jobs_running (status, worker).
ALTER TABLE dbqueue_jobs ADD COLUMN resume_status varchar(16) NULL,
    ADD COLUMN control varchar(16) NULL;

-- A worker's pause mode (graceful or aggressive), NULL while it runs; any process may set it.
ALTER TABLE dbqueue_workers ADD COLUMN pause_mode varchar(16) NULL;

-- Processes following app.events(); workers publish job events only while one is alive.
CREATE TABLE dbqueue_subscribers (
    id            varchar(64) NOT NULL PRIMARY KEY,
    started_at    double NOT NULL,
    heartbeat_at  double NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The event stream: a short-lived, pruned log that subscribers read by sequence number.
CREATE TABLE dbqueue_events (
    seq           bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    created_at    double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6))),
    body          mediumtext NOT NULL,
    KEY dbqueue_events_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
