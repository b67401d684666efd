// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Owned, NodeIdentity} from "./Owned.sol";
import {INodePool, ISessionV2} from "./Interfaces.sol";

/// @title SessionQueueV2 (corlens devnet)
/// @notice The user-task queue of SessionV2 sessions. Task ids count from 0 per session, global
/// ids from 0 across sessions. Order enforced: queued -> assigned (router) -> ack (each assigned
/// miner) -> precommit (acked miners) -> endPrecommit (router, >= 1 precommit) -> commit
/// (precommitted miners, data must hash to the precommit) -> endCommit (router, >= 1 commit)
/// -> end (router; forceEnd allows any time after assignment). Task status ids: 0 none,
/// 1 queued, 2 assigned, 3 precommit ended, 4 commit ended, 5 ended. Miner result state ids:
/// 0 none, 1 assigned, 2 acked, 3 precommitted, 4 committed.
contract SessionQueueV2 is Owned, NodeIdentity {
    enum TaskStatus { None, Queued, Assigned, PrecommitEnded, CommitEnded, Ended }
    enum ResultState { None, Assigned, Acked, Precommitted, Committed }

    struct Task {
        uint256 id;
        uint256 gid;
        uint256 sessionId;
        string data;
        address[] assignedMiners;
        bool ended;
        TaskStatus status;
        uint256 createdAt;
        uint256 lastPrecommitAt;
        uint256 lastCommitAt;
        uint256 finishedAt;
    }

    struct Result {
        ResultState state;
        bytes32 hash;
        string data;
    }

    struct Progress {
        address[] precommitters;
        address[] committers;
        bool allPrecommittedEmitted;
        bool allCommittedEmitted;
    }

    event TaskAcked(uint256 sessionId, uint256 taskId, address miner);
    event TaskAllCommitted(uint256 sessionId, uint256 taskId, address[] miners);
    event TaskAllPrecommitted(uint256 sessionId, uint256 taskId, address[] miners);
    event TaskAssigned(uint256 sessionId, uint256 taskId, address[] miners);
    event TaskCommitEnded(uint256 sessionId, uint256 taskId);
    event TaskCommitted(uint256 sessionId, uint256 taskId, address miner);
    event TaskEnded(uint256 sessionId, uint256 taskId, address[] miners);
    event TaskPrecommitEnded(uint256 sessionId, uint256 taskId);
    event TaskPrecommitted(uint256 sessionId, uint256 taskId, address miner);
    event TaskQueued(uint256 sessionId, uint256 taskId, uint256 globalId, string taskData);

    uint256 public globalTaskCount;
    address private _session;
    address private _pool;
    address private _payment;
    mapping(uint256 => Task[]) private _tasks;
    mapping(uint256 => mapping(uint256 => Progress)) private _progress;
    mapping(uint256 => mapping(uint256 => mapping(address => Result))) private _results;

    modifier onlyRouter(uint256 sessionId) {
        require(msg.sender == owner() || ISessionV2(_session).getRouterIndex(sessionId, msg.sender) >= 0, "not router");
        _;
    }

    // ---- wiring -------------------------------------------------------------------------

    function setSession(address session) external onlyOwner { _session = session; }
    function setNodePool(address _nodePoolContract) external onlyOwner { _pool = _nodePoolContract; }
    function setSessionPayment(address _sessionPaymentContract) external onlyOwner { _payment = _sessionPaymentContract; }
    function getSessionAddress() external view returns (address) { return _session; }
    function getNodePoolAddress() external view returns (address) { return _pool; }
    function getSessionPaymentAddress() external view returns (address) { return _payment; }

    // ---- lifecycle ----------------------------------------------------------------------

    function enqueueTask(
        uint256 sessionId,
        string calldata taskData,
        uint256 promptType,
        string calldata promptTemplate,
        uint256[] calldata llmParams,
        uint256[] calldata requestParams
    ) external returns (uint256 taskId) {
        require(msg.sender == _session, "only session");
        (promptType, promptTemplate, llmParams, requestParams); // decoration is not modelled
        taskId = _tasks[sessionId].length;
        Task storage t = _tasks[sessionId].push();
        t.id = taskId;
        t.gid = globalTaskCount++;
        t.sessionId = sessionId;
        t.data = taskData;
        t.status = TaskStatus.Queued;
        t.createdAt = block.timestamp;
        emit TaskQueued(sessionId, taskId, t.gid, taskData);
    }

    function assignTask(uint256 sessionId, uint256 taskId, address[] calldata addrs, uint256 modelIdentifier)
        external
        onlyRouter(sessionId)
    {
        Task storage t = _task(sessionId, taskId);
        require(t.status == TaskStatus.Queued, "task not queued");
        require(addrs.length > 0, "no miners");
        require(ISessionV2(_session).getModelIdentifier(sessionId) == modelIdentifier, "model mismatch");
        mapping(address => Result) storage results = _results[sessionId][taskId];
        for (uint256 i = 0; i < addrs.length; i++) {
            require(ISessionV2(_session).isSessionNode(sessionId, addrs[i]), "miner not in session");
            require(results[addrs[i]].state == ResultState.None, "duplicate miner");
            results[addrs[i]].state = ResultState.Assigned;
            INodePool(_pool).setLastExecutionTimestampByNode(addrs[i]);
        }
        t.assignedMiners = addrs;
        t.status = TaskStatus.Assigned;
        emit TaskAssigned(sessionId, taskId, addrs);
        ISessionV2(_session).onTaskAssigned(sessionId, taskId, addrs);
    }

    function ack(uint256 sessionId, uint256 taskId) external {
        Task storage t = _task(sessionId, taskId);
        require(t.status == TaskStatus.Assigned, "task not open for ack");
        Result storage r = _results[sessionId][taskId][msg.sender];
        require(r.state != ResultState.None, "not assigned");
        require(r.state == ResultState.Assigned, "already acked");
        r.state = ResultState.Acked;
        emit TaskAcked(sessionId, taskId, msg.sender);
    }

    function precommit(uint256 sessionId, uint256 taskId, bytes32 hash, string calldata data) external {
        data; // a signature on the real network; unused here
        Task storage t = _task(sessionId, taskId);
        require(t.status == TaskStatus.Assigned, "precommit closed");
        Result storage r = _results[sessionId][taskId][msg.sender];
        require(r.state != ResultState.None, "not assigned");
        require(r.state != ResultState.Assigned, "not acked");
        require(r.state == ResultState.Acked, "already precommitted");
        r.state = ResultState.Precommitted;
        r.hash = hash;
        t.lastPrecommitAt = block.timestamp;
        Progress storage p = _progress[sessionId][taskId];
        p.precommitters.push(msg.sender);
        emit TaskPrecommitted(sessionId, taskId, msg.sender);
        if (p.precommitters.length == t.assignedMiners.length) {
            p.allPrecommittedEmitted = true;
            emit TaskAllPrecommitted(sessionId, taskId, p.precommitters);
        }
    }

    function endPrecommit(uint256 sessionId, uint256 taskId, bool emitAllPrecommitted) external onlyRouter(sessionId) {
        Task storage t = _task(sessionId, taskId);
        require(t.status == TaskStatus.Assigned, "task not in precommit");
        Progress storage p = _progress[sessionId][taskId];
        require(p.precommitters.length > 0, "no precommits");
        t.status = TaskStatus.PrecommitEnded;
        if (emitAllPrecommitted && !p.allPrecommittedEmitted) {
            p.allPrecommittedEmitted = true;
            emit TaskAllPrecommitted(sessionId, taskId, p.precommitters);
        }
        emit TaskPrecommitEnded(sessionId, taskId);
    }

    function commit(uint256 sessionId, uint256 taskId, string calldata data) external {
        Task storage t = _task(sessionId, taskId);
        require(t.status != TaskStatus.Assigned, "precommit not ended");
        require(t.status == TaskStatus.PrecommitEnded, "commit closed");
        Result storage r = _results[sessionId][taskId][msg.sender];
        require(r.state != ResultState.Committed, "already committed");
        require(r.state == ResultState.Precommitted, "not precommitted");
        require(keccak256(bytes(data)) == r.hash, "hash mismatch");
        r.state = ResultState.Committed;
        r.data = data;
        t.lastCommitAt = block.timestamp;
        Progress storage p = _progress[sessionId][taskId];
        p.committers.push(msg.sender);
        emit TaskCommitted(sessionId, taskId, msg.sender);
        if (p.committers.length == p.precommitters.length) {
            p.allCommittedEmitted = true;
            emit TaskAllCommitted(sessionId, taskId, p.committers);
        }
    }

    function endCommit(uint256 sessionId, uint256 taskId, bool emitAllCommitted) external onlyRouter(sessionId) returns (bool) {
        Task storage t = _task(sessionId, taskId);
        require(t.status == TaskStatus.PrecommitEnded, "task not in commit");
        Progress storage p = _progress[sessionId][taskId];
        require(p.committers.length > 0, "no commits");
        t.status = TaskStatus.CommitEnded;
        if (emitAllCommitted && !p.allCommittedEmitted) {
            p.allCommittedEmitted = true;
            emit TaskAllCommitted(sessionId, taskId, p.committers);
        }
        emit TaskCommitEnded(sessionId, taskId);
        return true;
    }

    function end(uint256 sessionId, uint256 taskId, bool forceEnd) external onlyRouter(sessionId) {
        Task storage t = _task(sessionId, taskId);
        require(t.status != TaskStatus.Ended, "task ended");
        if (forceEnd) require(t.status != TaskStatus.Queued, "task not assigned");
        else require(t.status == TaskStatus.CommitEnded, "commit not ended");
        t.status = TaskStatus.Ended;
        t.ended = true;
        t.finishedAt = block.timestamp;
        emit TaskEnded(sessionId, taskId, t.assignedMiners);
    }

    // ---- views --------------------------------------------------------------------------

    function getTask(uint256 sessionId, uint256 taskId) external view returns (Task memory) {
        return _task(sessionId, taskId);
    }

    function getTaskCountBySessionId(uint256 sessionId) external view returns (uint256) {
        return _tasks[sessionId].length;
    }

    function getTaskStatus(uint256 sessionId, uint256 taskId) external view returns (uint8) {
        return uint8(_task(sessionId, taskId).status);
    }

    function getTaskResultState(uint256 sessionId, uint256 taskId, address addr) external view returns (uint8) {
        return uint8(_results[sessionId][taskId][addr].state);
    }

    function getTaskResultDataHash(uint256 sessionId, uint256 taskId, address miner) external view returns (bytes32) {
        return _results[sessionId][taskId][miner].hash;
    }

    /// @notice The committed results, in commit order.
    function getTaskResults(uint256 sessionId, uint256 taskId) external view returns (address[] memory miners, string[] memory results) {
        miners = _progress[sessionId][taskId].committers;
        results = new string[](miners.length);
        for (uint256 i = 0; i < miners.length; i++) results[i] = _results[sessionId][taskId][miners[i]].data;
    }

    function getHash(string calldata str) external pure returns (bytes32) {
        return keccak256(bytes(str));
    }

    function _task(uint256 sessionId, uint256 taskId) private view returns (Task storage) {
        require(taskId < _tasks[sessionId].length, "task not found");
        return _tasks[sessionId][taskId];
    }
}
