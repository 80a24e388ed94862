-- The job table, the worker registry and per-queue state. MySQL has no partial indexes, so
-- stored generated columns that are NULL outside the interesting statuses stand in for them.
CREATE TABLE dbqueue_jobs (
    id              varchar(64) NOT NULL,
    task            varchar(255) NOT NULL,
    queue           varchar(255) NOT NULL,
    priority        int NOT NULL DEFAULT 0,
    status          varchar(16) NOT NULL DEFAULT 'pending',
    payload         longblob NOT NULL,
    content_type    varchar(64) NOT NULL,
    result          longblob NULL,
    result_type     varchar(64) NULL,
    error_type      varchar(255) NULL,
    error           text NULL,
    traceback       mediumtext NULL,
    attempt         int NOT NULL DEFAULT 0,
    max_retries     int NULL,
    run_at          double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6))),
    expires_at      double NULL,
    created_at      double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6))),
    started_at      double NULL,
    finished_at     double NULL,
    worker          varchar(64) NULL,
    unique_key      varchar(255) NULL,
    parent_id       varchar(64) NULL,
    root_id         varchar(64) NULL,
    options         text NULL,
    claim_queue     varchar(255) AS
        (CASE WHEN status IN ('pending', 'retrying') THEN queue END) STORED,
    live_unique_key varchar(255) AS
        (CASE WHEN status IN ('pending', 'running', 'retrying', 'waiting', 'paused')
              THEN unique_key END) STORED,
    PRIMARY KEY (id),
    KEY dbqueue_jobs_claim (claim_queue, priority DESC, run_at),
    KEY dbqueue_jobs_running (status, worker),
    KEY dbqueue_jobs_finished (status, finished_at),
    UNIQUE KEY dbqueue_jobs_live_unique (live_unique_key),
    KEY dbqueue_jobs_parent (parent_id),
    CONSTRAINT dbqueue_jobs_status_check CHECK (status IN (
        'pending', 'running', 'completed', 'failed', 'retrying', 'waiting', 'cancelled', 'paused'
    )),
    CONSTRAINT dbqueue_jobs_attempt_check CHECK (attempt >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE dbqueue_workers (
    id            varchar(64) NOT NULL PRIMARY KEY,
    name          varchar(255) NOT NULL,
    hostname      varchar(255) NOT NULL,
    pid           int NOT NULL,
    queues        text NOT NULL,
    concurrency   int NOT NULL,
    pool          varchar(32) NOT NULL,
    info          text NULL,
    started_at    double NOT NULL,
    heartbeat_at  double NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE dbqueue_queues (
    name          varchar(255) NOT NULL PRIMARY KEY,
    paused        boolean NOT NULL DEFAULT false,
    updated_at    double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6)))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
