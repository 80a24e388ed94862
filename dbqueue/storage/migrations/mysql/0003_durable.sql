-- Durable workflows: checkpoints of a job's calls and phases, fan-outs and their children.
-- A job row says whether it has checkpoints (so only those jobs read them when they start),
-- and a fan-out child names its fan-out and its position in it.
ALTER TABLE dbqueue_jobs
    ADD COLUMN checkpointed boolean NOT NULL DEFAULT false,
    ADD COLUMN fan_out_id varchar(64) NULL,
    ADD COLUMN fan_out_index int NULL;
-- A fan-out's children are found through their parent (dbqueue_jobs_parent): one index less
-- to maintain each time a child is claimed or finishes.

-- One row per recorded call (call_index >= 0) or named phase (call_index = -1) of a job.
CREATE TABLE dbqueue_checkpoints (
    job_id        varchar(64) NOT NULL,
    call_index    int NOT NULL,
    call_type     varchar(255) NOT NULL,
    result        longblob NULL,
    content_type  varchar(64) NULL,
    error_type    varchar(255) NULL,
    error         text NULL,
    created_at    double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6))),
    PRIMARY KEY (job_id, call_index, call_type),
    CONSTRAINT dbqueue_checkpoints_job FOREIGN KEY (job_id)
        REFERENCES dbqueue_jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per fan-out: its strategy, how many children finished each way, and its decision.
CREATE TABLE dbqueue_fan_outs (
    id            varchar(64) NOT NULL PRIMARY KEY,
    parent_id     varchar(64) NOT NULL,
    call_index    int NOT NULL,
    strategy      varchar(16) NOT NULL,
    threshold     double NULL,
    needed        int NOT NULL,
    total         int NOT NULL,
    completed     int NOT NULL DEFAULT 0,
    failed        int NOT NULL DEFAULT 0,
    cancelled     int NOT NULL DEFAULT 0,
    status        varchar(16) NOT NULL DEFAULT 'pending',
    timeout_at    double NULL,
    cancel_on_parent_failure boolean NOT NULL DEFAULT true,
    created_at    double NOT NULL DEFAULT (UNIX_TIMESTAMP(NOW(6))),
    decided_at    double NULL,
    KEY dbqueue_fan_outs_parent (parent_id),
    KEY dbqueue_fan_outs_timeout (status, timeout_at),
    KEY dbqueue_fan_outs_decided (status, decided_at),
    CONSTRAINT dbqueue_fan_outs_parent_job FOREIGN KEY (parent_id)
        REFERENCES dbqueue_jobs (id) ON DELETE CASCADE,
    CONSTRAINT dbqueue_fan_outs_status_check CHECK (status IN (
        'pending', 'completed', 'failed', 'timed_out', 'cancelled'
    )),
    CONSTRAINT dbqueue_fan_outs_strategy_check CHECK (strategy IN (
        'fail_fast', 'collect_all', 'threshold'
    )),
    CONSTRAINT dbqueue_fan_outs_counts_check CHECK (
        completed >= 0 AND failed >= 0 AND cancelled >= 0 AND total >= 0
    )
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
