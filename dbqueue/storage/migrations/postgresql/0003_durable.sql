-- Durable workflows: checkpoints of a job's calls and phases, fan-outs and their children.
-- A job row says whether it has checkpoints (so only those jobs read them when they start),
-- and a fan-out child names its fan-out and its position in it.
ALTER TABLE dbqueue_jobs ADD COLUMN checkpointed boolean NOT NULL DEFAULT false;
ALTER TABLE dbqueue_jobs ADD COLUMN fan_out_id varchar(64);
ALTER TABLE dbqueue_jobs ADD COLUMN fan_out_index integer;

-- A fan-out's children are found through their parent (dbqueue_jobs_parent): one index less
-- to maintain each time a child is claimed or finishes.
-- Parents suspended for their children, for the recovery pass.
CREATE INDEX dbqueue_jobs_waiting ON dbqueue_jobs (id) WHERE status = 'waiting';

-- One row per recorded call (call_index >= 0) or named phase (call_index = -1) of a job.
CREATE TABLE dbqueue_checkpoints (
    job_id        varchar(64) NOT NULL REFERENCES dbqueue_jobs (id) ON DELETE CASCADE,
    call_index    integer NOT NULL,
    call_type     varchar(255) NOT NULL,
    result        bytea,
    content_type  varchar(64),
    error_type    varchar(255),
    error         text,
    created_at    double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp())),
    PRIMARY KEY (job_id, call_index, call_type)
);

-- One row per fan-out: its strategy, how many children finished each way, and its decision.
CREATE TABLE dbqueue_fan_outs (
    id            varchar(64) PRIMARY KEY,
    parent_id     varchar(64) NOT NULL REFERENCES dbqueue_jobs (id) ON DELETE CASCADE,
    call_index    integer NOT NULL,
    strategy      varchar(16) NOT NULL,
    threshold     double precision,
    needed        integer NOT NULL,
    total         integer NOT NULL,
    completed     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    cancelled     integer NOT NULL DEFAULT 0,
    status        varchar(16) NOT NULL DEFAULT 'pending',
    timeout_at    double precision,
    cancel_on_parent_failure boolean NOT NULL DEFAULT true,
    created_at    double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp())),
    decided_at    double precision,
    CONSTRAINT dbqueue_fan_outs_status_check CHECK (status IN (
        'pending', 'completed', 'failed', 'timed_out', 'cancelled'
    )),
    CONSTRAINT dbqueue_fan_outs_strategy_check CHECK (strategy IN (
        'fail_fast', 'collect_all', 'threshold'
    )),
    CONSTRAINT dbqueue_fan_outs_counts_check CHECK (
        completed >= 0 AND failed >= 0 AND cancelled >= 0 AND total >= 0
    )
);
CREATE INDEX dbqueue_fan_outs_parent ON dbqueue_fan_outs (parent_id);
-- Undecided fan-outs with a deadline, for the timeout pass.
CREATE INDEX dbqueue_fan_outs_timeout ON dbqueue_fan_outs (timeout_at)
    WHERE status = 'pending' AND timeout_at IS NOT NULL;
-- Decided fan-outs, for the recovery pass (which looks for unfinished children). The counts
-- stay out of every index, so counting a child updates the row in place (a HOT update).
CREATE INDEX dbqueue_fan_outs_decided ON dbqueue_fan_outs (decided_at)
    WHERE status <> 'pending'
