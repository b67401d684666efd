"""The indexer's and the gateway's tables in SQLAlchemy Core, named as their models.

Generated from the models by ``python -m indexer.tables_gen``: do not edit. The indexing
processes use these rather than the models, which load SQLModel and the ORM.
"""

from __future__ import annotations

import sqlalchemy as sa

from indexer.schema import BigId, UtcDateTime

metadata = sa.MetaData()


Block = sa.Table(
    'block',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('number', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('hash', sa.String(), nullable=False),
    sa.Column('parent_hash', sa.String(), nullable=True),
    sa.Column('timestamp', sa.BigInteger(), nullable=True),
    sa.Column('finality', sa.String(), nullable=False, default='latest'),
)


ChainState = sa.Table(
    'chain_state',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('cursor_block', sa.BigInteger(), nullable=False, default=-1),
    sa.Column('cursor_hash', sa.String(), nullable=True),
    sa.Column('head_block', sa.BigInteger(), nullable=False, default=-1),
    sa.Column('safe_block', sa.BigInteger(), nullable=False, default=-1),
    sa.Column('finalized_block', sa.BigInteger(), nullable=False, default=-1),
    sa.Column('events_indexed', sa.BigInteger(), nullable=False, default=0),
    sa.Column('unknown_logs', sa.BigInteger(), nullable=False, default=0),
    sa.Column('malformed_logs', sa.BigInteger(), nullable=False, default=0),
    sa.Column('reorgs', sa.BigInteger(), nullable=False, default=0),
    sa.Column('updated_at', UtcDateTime(), nullable=True),
)


Event = sa.Table(
    'event',
    metadata,
    sa.Column('id', BigId, primary_key=True, nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(), nullable=False),
    sa.Column('tx_hash', sa.String(), nullable=False),
    sa.Column('tx_index', sa.Integer(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('contract', sa.String(), nullable=False),
    sa.Column('event', sa.String(), nullable=False),
    sa.Column('topic0', sa.String(), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('topics', sa.JSON(), nullable=False),
    sa.Column('data', sa.String(), nullable=False),
    sa.Column('session_id', sa.BigInteger(), nullable=True),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('subject', sa.String(), nullable=True),
    sa.Column('sender', sa.String(), nullable=True),
    sa.UniqueConstraint('chain_id', 'tx_hash', 'log_index', name='uq_event_log'),
    sa.Index('ix_event_chain_block', 'chain_id', 'block_number'),
    sa.Index('ix_event_subject', 'chain_id', 'contract', 'subject'),
    sa.Index('ix_event_task', 'chain_id', 'session_id', 'task_id'),
)


ApiKey = sa.Table(
    'gateway_api_key',
    metadata,
    sa.Column('id', BigId, primary_key=True, nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('key_hash', sa.String(), nullable=False),
    sa.Column('prefix', sa.String(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False, default=True),
    sa.Column('rpm_limit', sa.Integer(), nullable=True),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.Column('last_used_at', UtcDateTime(), nullable=True),
    sa.Index('ix_gateway_api_key_key_hash', 'key_hash', unique=True),
)


GatewayRequest = sa.Table(
    'gateway_request',
    metadata,
    sa.Column('id', BigId, primary_key=True, nullable=False),
    sa.Column('request_id', sa.String(), nullable=False),
    sa.Column('key_id', sa.BigInteger(), nullable=True),
    sa.Column('model', sa.String(), nullable=False),
    sa.Column('endpoint', sa.String(), nullable=False),
    sa.Column('stream', sa.Boolean(), nullable=False, default=False),
    sa.Column('chain', sa.String(), nullable=True),
    sa.Column('session_id', sa.BigInteger(), nullable=True),
    sa.Column('session_key', sa.String(), nullable=True),
    sa.Column('router_label', sa.String(), nullable=True),
    sa.Column('router_url', sa.String(), nullable=True),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('ttfb_ms', sa.Float(), nullable=True),
    sa.Column('waited_ms', sa.Float(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False, default=1),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('replica_id', sa.String(), nullable=False),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.Index('ix_gateway_request_created', 'created_at'),
    sa.Index('ix_gateway_request_key_id', 'key_id'),
    sa.Index('ix_gateway_request_model', 'model'),
    sa.Index('ix_gateway_request_request_id', 'request_id', unique=True),
    sa.Index('ix_gateway_request_session_created', 'session_key', 'created_at'),
    sa.Index('ix_gateway_request_status', 'status'),
)


MalformedLog = sa.Table(
    'malformed_log',
    metadata,
    sa.Column('id', BigId, primary_key=True, nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(), nullable=False),
    sa.Column('tx_hash', sa.String(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(), nullable=False),
    sa.Column('topic0', sa.String(), nullable=False),
    sa.Column('contract', sa.String(), nullable=False),
    sa.Column('event', sa.String(), nullable=False),
    sa.Column('reason', sa.String(), nullable=False),
    sa.UniqueConstraint('chain_id', 'tx_hash', 'log_index', name='uq_malformed'),
)


NetworkTask = sa.Table(
    'network_task',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('round_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('status', sa.String(), nullable=False, default='requested'),
    sa.Column('creator', sa.String(), nullable=True),
    sa.Column('preparer', sa.String(), nullable=True),
    sa.Column('miners', sa.JSON(), nullable=False),
    sa.Column('force_end', sa.Boolean(), nullable=False, default=False),
    sa.Column('start_time', sa.BigInteger(), nullable=True),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.Column('first_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
)


NetworkTaskStep = sa.Table(
    'network_task_step',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('round_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('step', sa.String(), primary_key=True, nullable=False),
    sa.Column('actor', sa.String(), primary_key=True, nullable=False, default=''),
    sa.Column('event', sa.String(), nullable=False),
    sa.Column('tx_hash', sa.String(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('block_time', sa.BigInteger(), nullable=True),
)


Node = sa.Table(
    'node',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('address', sa.String(), primary_key=True, nullable=False),
    sa.Column('node_id', sa.String(), nullable=True),
    sa.Column('pool_state', sa.String(), nullable=False, default='added'),
    sa.Column('in_pool', sa.Boolean(), nullable=False, default=True),
    sa.Column('kind', sa.String(), nullable=True),
    sa.Column('last_execution', sa.BigInteger(), nullable=True),
    sa.Column('first_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
)


Payment = sa.Table(
    'payment',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('tx_hash', sa.String(), primary_key=True, nullable=False),
    sa.Column('log_index', sa.Integer(), primary_key=True, nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('session_id', sa.BigInteger(), nullable=True),
    sa.Column('task_id', sa.BigInteger(), nullable=True),
    sa.Column('node', sa.String(), nullable=True),
    sa.Column('counterparty', sa.String(), nullable=True),
    sa.Column('amount', sa.String(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_time', sa.BigInteger(), nullable=True),
    sa.Index('ix_payment_node', 'chain_id', 'node'),
    sa.Index('ix_payment_task', 'chain_id', 'session_id', 'task_id'),
)


Session = sa.Table(
    'session',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('session_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('sid', sa.String(), nullable=True),
    sa.Column('name', sa.String(), nullable=True),
    sa.Column('owner', sa.String(), nullable=True),
    sa.Column('model_identifier', sa.String(), nullable=True),
    sa.Column('state', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False, default=True),
    sa.Column('redundant', sa.Integer(), nullable=True),
    sa.Column('min_nodes', sa.Integer(), nullable=True),
    sa.Column('max_nodes', sa.Integer(), nullable=True),
    sa.Column('mode', sa.Integer(), nullable=True),
    sa.Column('ephemeral_nodes', sa.JSON(), nullable=False),
    sa.Column('dedicated_nodes', sa.JSON(), nullable=False),
    sa.Column('miners', sa.JSON(), nullable=False),
    sa.Column('routers', sa.JSON(), nullable=False),
    sa.Column('created_block', sa.BigInteger(), nullable=True),
    sa.Column('created_tx', sa.String(), nullable=True),
    sa.Column('updated_block', sa.BigInteger(), nullable=True),
    sa.Column('deactivated_tx', sa.String(), nullable=True),
    sa.Column('snapshot_block', sa.BigInteger(), nullable=True),
    sa.Index('ix_session_model_identifier', 'model_identifier'),
    sa.Index('ix_session_owner', 'owner'),
)


Task = sa.Table(
    'task',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('session_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('global_id', sa.BigInteger(), nullable=True),
    sa.Column('client_reference', sa.String(), nullable=True),
    sa.Column('task_data', sa.String(), nullable=True),
    sa.Column('status', sa.String(), nullable=False, default='submitted'),
    sa.Column('force_ended', sa.Boolean(), nullable=False, default=False),
    sa.Column('miners', sa.JSON(), nullable=False),
    sa.Column('node_ids', sa.JSON(), nullable=False),
    sa.Column('first_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.Column('steps_json', sa.Text(), nullable=True),
    sa.Column('miners_json', sa.Text(), nullable=True),
    sa.Column('payments_json', sa.Text(), nullable=True),
    sa.Index('ix_task_client_reference', 'client_reference'),
)


TaskMiner = sa.Table(
    'task_miner',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('session_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('miner', sa.String(), primary_key=True, nullable=False),
    sa.Column('assigned_block', sa.BigInteger(), nullable=False),
    sa.Column('ack_tx', sa.String(), nullable=True),
    sa.Column('ack_block', sa.BigInteger(), nullable=True),
    sa.Column('ack_log_index', sa.Integer(), nullable=True),
    sa.Column('precommit_tx', sa.String(), nullable=True),
    sa.Column('precommit_block', sa.BigInteger(), nullable=True),
    sa.Column('precommit_log_index', sa.Integer(), nullable=True),
    sa.Column('commit_tx', sa.String(), nullable=True),
    sa.Column('commit_block', sa.BigInteger(), nullable=True),
    sa.Column('commit_log_index', sa.Integer(), nullable=True),
)


TaskStep = sa.Table(
    'task_step',
    metadata,
    sa.Column('chain_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('session_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('task_id', sa.BigInteger(), primary_key=True, nullable=False),
    sa.Column('step', sa.String(), primary_key=True, nullable=False),
    sa.Column('event', sa.String(), nullable=False),
    sa.Column('tx_hash', sa.String(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('block_time', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(), nullable=True),
)
