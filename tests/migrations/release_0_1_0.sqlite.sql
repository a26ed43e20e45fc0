-- The job store's schema as release 0.1.0 created it (sqlite): what its
-- metadata.create_all emitted, before schema migrations existed. Frozen: the
-- migration tests upgrade a database made from this file.

CREATE TABLE conveyor_files (
	id VARCHAR(36) NOT NULL,
	tenant_id VARCHAR(200) NOT NULL,
	org_id VARCHAR(200),
	filename VARCHAR(1000) NOT NULL,
	system_path TEXT NOT NULL,
	size INTEGER NOT NULL,
	sha256 VARCHAR(64),
	content_type VARCHAR(200),
	cad_format VARCHAR(32),
	preview_path TEXT,
	geometry_path TEXT,
	conversion_status VARCHAR(16),
	conversion_error JSON,
	attributes JSON,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE conveyor_job_events (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	job_id VARCHAR(36) NOT NULL,
	file_id VARCHAR(36),
	attempt_id INTEGER NOT NULL,
	action VARCHAR(32) NOT NULL,
	payload JSON,
	created_at DATETIME NOT NULL
);

CREATE INDEX ix_conveyor_job_events_job_id ON conveyor_job_events (job_id);

CREATE TABLE conveyor_jobs (
	id VARCHAR(36) NOT NULL,
	kind VARCHAR(200) NOT NULL,
	tenant_id VARCHAR(200) NOT NULL,
	org_id VARCHAR(200),
	status VARCHAR(16) NOT NULL,
	priority INTEGER NOT NULL,
	payload JSON,
	result JSON,
	error_code VARCHAR(100),
	last_error TEXT,
	error_history JSON,
	attempt_id INTEGER NOT NULL,
	attempts INTEGER NOT NULL,
	max_attempts INTEGER NOT NULL,
	lease_owner VARCHAR(200),
	lease_expires_at DATETIME,
	next_attempt_at DATETIME,
	idempotency_key VARCHAR(200),
	file_id VARCHAR(36),
	trace_id VARCHAR(64),
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	started_at DATETIME,
	finished_at DATETIME,
	PRIMARY KEY (id)
);

CREATE INDEX ix_conveyor_jobs_file_id ON conveyor_jobs (file_id) WHERE file_id IS NOT NULL;

CREATE INDEX ix_conveyor_jobs_finished ON conveyor_jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE INDEX ix_conveyor_jobs_kind_status ON conveyor_jobs (kind, status) WHERE status IN ('queued', 'running');

CREATE INDEX ix_conveyor_jobs_status_lease ON conveyor_jobs (status, lease_expires_at) WHERE status IN ('queued', 'running');

CREATE UNIQUE INDEX uq_conveyor_jobs_idem ON conveyor_jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE conveyor_leases (
	name VARCHAR(200) NOT NULL,
	holder VARCHAR(200),
	token INTEGER NOT NULL,
	expires_at DATETIME,
	PRIMARY KEY (name)
);

CREATE TABLE conveyor_outbox (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	job_id VARCHAR(36) NOT NULL,
	stream VARCHAR(200) NOT NULL,
	message JSON NOT NULL,
	status VARCHAR(16) NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at DATETIME NOT NULL,
	last_error TEXT,
	created_at DATETIME NOT NULL,
	dispatched_at DATETIME,
	stream_entry_id VARCHAR(64)
);

CREATE INDEX ix_conveyor_outbox_job_id ON conveyor_outbox (job_id);

CREATE INDEX ix_conveyor_outbox_pending ON conveyor_outbox (status, next_attempt_at) WHERE status = 'pending';

CREATE TABLE conveyor_queue (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	stream VARCHAR(200) NOT NULL,
	job_id VARCHAR(36) NOT NULL,
	priority INTEGER NOT NULL,
	fields JSON NOT NULL,
	enqueued_at DATETIME NOT NULL,
	consumer VARCHAR(200),
	delivered_at DATETIME,
	deliveries INTEGER NOT NULL
);

CREATE INDEX ix_conveyor_queue_job ON conveyor_queue (job_id);

CREATE INDEX ix_conveyor_queue_ready ON conveyor_queue (stream, consumer, priority, id);

CREATE TABLE conveyor_workers (
	name VARCHAR(200) NOT NULL,
	role VARCHAR(32) NOT NULL,
	host VARCHAR(200) NOT NULL,
	pid INTEGER NOT NULL,
	slots INTEGER NOT NULL,
	in_flight INTEGER NOT NULL,
	version VARCHAR(32),
	started_at DATETIME NOT NULL,
	last_progress_at DATETIME NOT NULL,
	last_seen_at DATETIME NOT NULL,
	stopped_at DATETIME,
	PRIMARY KEY (name)
);
