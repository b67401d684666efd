// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title BulkEmitter (corlens benchmarks)
/// @notice Emits the real Cortensor event signatures (SessionV2 TaskSubmitted, SessionQueueV2
/// task events, the assumed SessionPayment NodePaymentAllocated) n times per call with
/// consecutive task ids, so a benchmark fills many blocks with realistic logs cheaply. All logs
/// come from this one address: a benchmark maps it to the contracts whose events it reads.
/// Task ids run firstTaskId .. firstTaskId + n - 1; global ids equal task ids.
contract BulkEmitter {
    event TaskSubmitted(uint256 sessionId, uint256 taskId, string taskData, string clientReference);
    event TaskQueued(uint256 sessionId, uint256 taskId, uint256 globalId, string taskData);
    event TaskAssigned(uint256 sessionId, uint256 taskId, address[] miners);
    event TaskAcked(uint256 sessionId, uint256 taskId, address miner);
    event TaskPrecommitted(uint256 sessionId, uint256 taskId, address miner);
    event TaskCommitted(uint256 sessionId, uint256 taskId, address miner);
    event TaskEnded(uint256 sessionId, uint256 taskId, address[] miners);
    event NodePaymentAllocated(uint256 indexed sessionId, uint256 indexed taskId, address indexed node, uint256 amount);

    function emitTaskQueued(uint256 sessionId, uint256 firstTaskId, uint256 n, string calldata taskData) external {
        for (uint256 i = 0; i < n; i++) emit TaskQueued(sessionId, firstTaskId + i, firstTaskId + i, taskData);
    }

    function emitTaskAcked(uint256 sessionId, uint256 firstTaskId, uint256 n, address miner) external {
        for (uint256 i = 0; i < n; i++) emit TaskAcked(sessionId, firstTaskId + i, miner);
    }

    function emitTaskPrecommitted(uint256 sessionId, uint256 firstTaskId, uint256 n, address miner) external {
        for (uint256 i = 0; i < n; i++) emit TaskPrecommitted(sessionId, firstTaskId + i, miner);
    }

    function emitTaskCommitted(uint256 sessionId, uint256 firstTaskId, uint256 n, address miner) external {
        for (uint256 i = 0; i < n; i++) emit TaskCommitted(sessionId, firstTaskId + i, miner);
    }

    function emitTaskEnded(uint256 sessionId, uint256 firstTaskId, uint256 n, address[] calldata miners) external {
        for (uint256 i = 0; i < n; i++) emit TaskEnded(sessionId, firstTaskId + i, miners);
    }

    function emitNodePaymentAllocated(uint256 sessionId, uint256 firstTaskId, uint256 n, address node, uint256 amount) external {
        for (uint256 i = 0; i < n; i++) emit NodePaymentAllocated(sessionId, firstTaskId + i, node, amount);
    }

    function emitTaskSubmitted(uint256 sessionId, uint256 firstTaskId, uint256 n, string calldata clientReference) external {
        for (uint256 i = 0; i < n; i++) emit TaskSubmitted(sessionId, firstTaskId + i, "bench", clientReference);
    }

    /// @notice Per task the SessionQueueV2 lifecycle plus the payment: TaskQueued, TaskAssigned,
    /// TaskAcked, TaskPrecommitted, TaskCommitted, TaskEnded, NodePaymentAllocated (7 logs).
    function emitTaskLifecycles(uint256 sessionId, uint256 firstTaskId, uint256 n, address miner, uint256 amount) external {
        address[] memory miners = new address[](1);
        miners[0] = miner;
        for (uint256 i = 0; i < n; i++) {
            uint256 taskId = firstTaskId + i;
            emit TaskQueued(sessionId, taskId, taskId, "bench");
            emit TaskAssigned(sessionId, taskId, miners);
            emit TaskAcked(sessionId, taskId, miner);
            emit TaskPrecommitted(sessionId, taskId, miner);
            emit TaskCommitted(sessionId, taskId, miner);
            emit TaskEnded(sessionId, taskId, miners);
            emit NodePaymentAllocated(sessionId, taskId, miner, amount);
        }
    }
}
