// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

// corlens-build: via-ir

import {Owned, NodeIdentity} from "./Owned.sol";
import {INodePool, ISessionQueueV2} from "./Interfaces.sol";

/// @title SessionV2 (corlens devnet)
/// @notice User sessions: owner, model, redundancy, routers, dedicated and ephemeral nodes, and
/// task submission into SessionQueueV2. Session ids count from 0; state ids: 0 none,
/// 1 active, 2 deactivated. A deactivated session releases its nodes and accepts no tasks.
/// NewNodeAssignedToSession.assignmentType: 0 ephemeral, 1 dedicated; newNodeCount is the
/// session's node count of that kind after the assignment.
contract SessionV2 is Owned, NodeIdentity {
    enum SessionState { None, Active, Deactivated }

    struct Session {
        uint256 id;
        bytes32 sid;
        string name;
        string metadata;
        SessionState state;
        uint256 createdAt;
        uint256 updatedAt;
        address owner;
        address[] ephemeralNodes;
        address[] dedicatedNodes;
        uint256 mode;
        uint256 redundant;
        uint256 minNumOfNodes;
        uint256 maxNumOfNodes;
        uint256 numOfValidatorNodes;
        string[] routerMetadatas;
        address[] routerAddresses;
        uint256 sla;
        uint256 modelIdentifier;
        uint256 reservePeriod;
        uint256 maxTaskExecutionCount;
    }

    uint256 public constant MAX_RESERVE_PERIOD = 30 days;
    uint256 public constant MAX_TASK_EXECUTION_COUNT = 1_000_000;
    uint256 private constant EPHEMERAL = 0;
    uint256 private constant DEDICATED = 1;

    event AllRoutersRemoved(uint256 indexed sessionId);
    event DedicatedNodeAdded(address indexed nodeAddress);
    event DedicatedNodeRemoved(address indexed nodeAddress);
    event NewNodeAssignedToSession(uint256 indexed sessionId, address[] nodeAddresses, uint256 newNodeCount, uint256 assignmentType);
    event NodeReleased(bytes32 nodeId, uint256 sessionId);
    event RouterAdded(address routerAddress, string routerInfo);
    event RouterRemoved(address routerAddress);
    event RouterUpdated(address routerAddress, string routerInfo);
    event SessionCreated(uint256 sessionId, bytes32 sid, address owner, address[] miners);
    event SessionDeactivated(uint256 indexed sessionId, address indexed deactivator);
    event SessionUpdated(uint256 indexed sessionId, address indexed updater, uint256 minNumOfNodes, uint256 maxNumOfNodes, uint256 redundant);
    event TaskAssigned(uint256 sessionId, uint256 taskId, bytes32[] nodeIds);
    event TaskSubmitted(uint256 sessionId, uint256 taskId, string taskData, string clientReference);

    Session[] private _sessions;
    mapping(address => uint256[]) private _userSessions;
    mapping(address => uint256) private _dedicatedTo; // session id + 1
    address private _queue;
    address private _payment;
    address private _pool;

    modifier onlySessionOwner(uint256 sessionId) {
        require(sessionId < _sessions.length, "session not found");
        require(msg.sender == _sessions[sessionId].owner, "not session owner");
        _;
    }

    // ---- wiring -------------------------------------------------------------------------

    function setSessionQueue(address _sessionQueueContrat) external onlyOwner { _queue = _sessionQueueContrat; }
    function setSessionPayment(address _sessionPayment) external onlyOwner { _payment = _sessionPayment; }
    function setNodePool(address _nodePool) external onlyOwner { _pool = _nodePool; }
    function getSessionQueueAddress() external view returns (address) { return _queue; }
    function getSessionPaymentAddress() external view returns (address) { return _payment; }
    function getNodePoolAddress() external view returns (address) { return _pool; }

    // ---- session lifecycle --------------------------------------------------------------

    /// @notice Opens a session owned by the caller. With reserveEphemeralNodes the first
    /// minNumOfNodes unreserved pool nodes join it as ephemeral nodes (SessionCreated.miners).
    function create(
        string memory name,
        string memory metadata,
        address variableAddress,
        uint256 minNumOfNodes,
        uint256 maxNumOfNodes,
        uint256 redundant,
        uint256 numOfValidatorNodes,
        uint256 mode,
        bool reserveEphemeralNodes,
        uint256 sla,
        uint256 modelIdentifier,
        uint256 reservePeriod,
        uint256 maxTaskExecutionCount
    ) external {
        // Few locals and memory strings: this many parameters sit at the legacy stack limit.
        variableAddress; // an IAM hook on the real network; unused here
        _checkNodeCounts(minNumOfNodes, maxNumOfNodes, redundant);
        require(reservePeriod <= MAX_RESERVE_PERIOD, "reserve period too long");
        require(maxTaskExecutionCount <= MAX_TASK_EXECUTION_COUNT, "task count too high");
        Session storage s = _newSession(name, metadata);
        s.mode = mode;
        s.redundant = redundant;
        s.minNumOfNodes = minNumOfNodes;
        s.maxNumOfNodes = maxNumOfNodes;
        s.numOfValidatorNodes = numOfValidatorNodes;
        s.sla = sla;
        s.modelIdentifier = modelIdentifier;
        s.reservePeriod = reservePeriod;
        s.maxTaskExecutionCount = maxTaskExecutionCount;
        address[] memory miners;
        if (reserveEphemeralNodes) miners = INodePool(_pool).getAvailableNodes(minNumOfNodes);
        emit SessionCreated(s.id, s.sid, msg.sender, miners);
        if (miners.length > 0) _addEphemeral(s, miners);
    }

    function update(
        string calldata name,
        string calldata metadata,
        uint256 sessionId,
        uint256 minNumOfNodes,
        uint256 maxNumOfNodes,
        uint256 redundant,
        uint256 numOfValidatorNodes,
        uint256 mode
    ) external onlySessionOwner(sessionId) {
        Session storage s = _active(sessionId);
        _checkNodeCounts(minNumOfNodes, maxNumOfNodes, redundant);
        s.name = name;
        s.metadata = metadata;
        s.minNumOfNodes = minNumOfNodes;
        s.maxNumOfNodes = maxNumOfNodes;
        s.redundant = redundant;
        s.numOfValidatorNodes = numOfValidatorNodes;
        s.mode = mode;
        s.updatedAt = block.timestamp;
        emit SessionUpdated(sessionId, msg.sender, minNumOfNodes, maxNumOfNodes, redundant);
    }

    /// @notice Session owner or contract owner; releases every node of the session.
    function deactivateSession(uint256 sessionId) external {
        Session storage s = _active(sessionId);
        require(msg.sender == s.owner || msg.sender == owner(), "not session owner");
        s.state = SessionState.Deactivated;
        s.updatedAt = block.timestamp;
        emit SessionDeactivated(sessionId, msg.sender);
        for (uint256 i = 0; i < s.dedicatedNodes.length; i++) {
            delete _dedicatedTo[s.dedicatedNodes[i]];
            _release(sessionId, s.dedicatedNodes[i]);
        }
        for (uint256 i = 0; i < s.ephemeralNodes.length; i++) _release(sessionId, s.ephemeralNodes[i]);
        delete s.dedicatedNodes;
        delete s.ephemeralNodes;
    }

    // ---- routers ------------------------------------------------------------------------

    function addRouter(uint256 sessionId, address routerAddress, string calldata metadata) external onlySessionOwner(sessionId) {
        Session storage s = _active(sessionId);
        require(routerAddress != address(0), "zero router");
        require(_routerIndex(s, routerAddress) < 0, "router exists");
        s.routerAddresses.push(routerAddress);
        s.routerMetadatas.push(metadata);
        emit RouterAdded(routerAddress, metadata);
    }

    function updateRouter(uint256 sessionId, address routerAddress, string calldata newRouterInfo) external onlySessionOwner(sessionId) {
        Session storage s = _sessions[sessionId];
        int256 index = _routerIndex(s, routerAddress);
        require(index >= 0, "router not found");
        s.routerMetadatas[uint256(index)] = newRouterInfo;
        emit RouterUpdated(routerAddress, newRouterInfo);
    }

    function removeRouter(uint256 sessionId, address routerAddress) external onlySessionOwner(sessionId) {
        Session storage s = _sessions[sessionId];
        int256 index = _routerIndex(s, routerAddress);
        require(index >= 0, "router not found");
        uint256 last = s.routerAddresses.length - 1;
        s.routerAddresses[uint256(index)] = s.routerAddresses[last];
        s.routerMetadatas[uint256(index)] = s.routerMetadatas[last];
        s.routerAddresses.pop();
        s.routerMetadatas.pop();
        emit RouterRemoved(routerAddress);
    }

    function resetAllRouters(uint256 sessionId) external onlySessionOwner(sessionId) {
        Session storage s = _sessions[sessionId];
        delete s.routerAddresses;
        delete s.routerMetadatas;
        emit AllRoutersRemoved(sessionId);
    }

    // ---- nodes --------------------------------------------------------------------------

    function addDedicatedNode(uint256 sessionId, address nodeAddress) external onlySessionOwner(sessionId) {
        Session storage s = _active(sessionId);
        require(s.dedicatedNodes.length < s.maxNumOfNodes, "too many nodes");
        require(_dedicatedTo[nodeAddress] == 0, "node already dedicated");
        INodePool(_pool).reserveForSession(nodeAddress, sessionId);
        _dedicatedTo[nodeAddress] = sessionId + 1;
        s.dedicatedNodes.push(nodeAddress);
        emit DedicatedNodeAdded(nodeAddress);
        address[] memory added = new address[](1);
        added[0] = nodeAddress;
        emit NewNodeAssignedToSession(sessionId, added, s.dedicatedNodes.length, DEDICATED);
    }

    function removeDedicatedNode(uint256 sessionId, address nodeAddress) external onlySessionOwner(sessionId) {
        Session storage s = _active(sessionId);
        require(_dedicatedTo[nodeAddress] == sessionId + 1, "not a dedicated node");
        delete _dedicatedTo[nodeAddress];
        _removeAddress(s.dedicatedNodes, nodeAddress);
        emit DedicatedNodeRemoved(nodeAddress);
        _release(sessionId, nodeAddress);
    }

    /// @notice The network (contract owner) lends pool nodes to a session as ephemeral nodes.
    function assignEphemeralNodes(uint256 sessionId, address[] calldata nodes) external onlyOwner {
        Session storage s = _active(sessionId);
        require(nodes.length > 0, "no nodes");
        _addEphemeral(s, nodes);
    }

    // ---- tasks --------------------------------------------------------------------------

    /// @notice Session owner or one of its routers. Logs, in order: SessionQueueV2.TaskQueued,
    /// then SessionV2.TaskSubmitted.
    function submit(
        uint256 sessionId,
        uint256 nodeType,
        string memory taskData,
        uint256 promptType,
        string memory promptTemplate,
        uint256[] memory llmParams,
        uint256[] memory requestParams,
        string memory clientReference
    ) external {
        // memory, not calldata: calldata strings and arrays take two stack slots each, which
        // overflows the legacy code generator's stack here.
        nodeType; // node-type routing is the real network's concern
        Session storage s = _active(sessionId);
        require(msg.sender == s.owner || _routerIndex(s, msg.sender) >= 0, "not session owner or router");
        uint256 taskId = ISessionQueueV2(_queue).enqueueTask(
            sessionId, taskData, promptType, promptTemplate, llmParams, requestParams
        );
        emit TaskSubmitted(sessionId, taskId, taskData, clientReference);
    }

    /// @notice SessionQueueV2 reports an assignment; SessionV2 logs it with node ids.
    function onTaskAssigned(uint256 sessionId, uint256 taskId, address[] calldata miners) external {
        require(msg.sender == _queue, "only session queue");
        bytes32[] memory ids = new bytes32[](miners.length);
        for (uint256 i = 0; i < miners.length; i++) ids[i] = getNodeId(miners[i]);
        emit TaskAssigned(sessionId, taskId, ids);
    }

    // ---- views --------------------------------------------------------------------------

    function getSession(uint256 sessionId) external view returns (Session memory) {
        require(sessionId < _sessions.length, "session not found");
        return _sessions[sessionId];
    }

    function getSessionCount() external view returns (uint256) { return _sessions.length; }
    function doesSessionExist(uint256 sessionId) external view returns (bool) { return sessionId < _sessions.length; }
    function getSessionIds(address userAddr) external view returns (uint256[] memory) { return _userSessions[userAddr]; }

    function getModelIdentifier(uint256 sessionId) external view returns (uint256) {
        require(sessionId < _sessions.length, "session not found");
        return _sessions[sessionId].modelIdentifier;
    }

    function getRouterIndex(uint256 sessionId, address routerAddress) external view returns (int256) {
        if (sessionId >= _sessions.length) return -1;
        return _routerIndex(_sessions[sessionId], routerAddress);
    }

    function getRouterCount(uint256 sessionId) external view returns (uint256) {
        return _sessions[sessionId].routerAddresses.length;
    }

    function getRouterInfo(uint256 sessionId, address routerAddress) external view returns (string memory) {
        Session storage s = _sessions[sessionId];
        int256 index = _routerIndex(s, routerAddress);
        require(index >= 0, "router not found");
        return s.routerMetadatas[uint256(index)];
    }

    function getDedicatedNodeExists(uint256 sessionId, address nodeAddress) external view returns (bool) {
        return _dedicatedTo[nodeAddress] == sessionId + 1;
    }

    function isNodeAssignedToAnySession(address nodeAddress) external view returns (bool) {
        return _dedicatedTo[nodeAddress] != 0;
    }

    /// @notice Whether the node serves the session, dedicated or ephemeral.
    function isSessionNode(uint256 sessionId, address nodeAddress) external view returns (bool) {
        if (_dedicatedTo[nodeAddress] == sessionId + 1) return true;
        address[] storage nodes = _sessions[sessionId].ephemeralNodes;
        for (uint256 i = 0; i < nodes.length; i++) if (nodes[i] == nodeAddress) return true;
        return false;
    }

    // ---- internals ----------------------------------------------------------------------

    function _active(uint256 sessionId) private view returns (Session storage s) {
        require(sessionId < _sessions.length, "session not found");
        s = _sessions[sessionId];
        require(s.state == SessionState.Active, "session inactive");
    }

    function _newSession(string memory name, string memory metadata) private returns (Session storage s) {
        uint256 id = _sessions.length;
        s = _sessions.push();
        s.id = id;
        s.sid = keccak256(abi.encode(id, msg.sender));
        s.name = name;
        s.metadata = metadata;
        s.state = SessionState.Active;
        s.createdAt = block.timestamp;
        s.updatedAt = block.timestamp;
        s.owner = msg.sender;
        _userSessions[msg.sender].push(id);
    }

    function _checkNodeCounts(uint256 minNumOfNodes, uint256 maxNumOfNodes, uint256 redundant) private pure {
        require(minNumOfNodes >= 1 && minNumOfNodes <= maxNumOfNodes, "bad node range");
        require(redundant >= 1 && redundant <= maxNumOfNodes, "bad redundancy");
    }

    function _routerIndex(Session storage s, address routerAddress) private view returns (int256) {
        for (uint256 i = 0; i < s.routerAddresses.length; i++) {
            if (s.routerAddresses[i] == routerAddress) return int256(i);
        }
        return -1;
    }

    function _addEphemeral(Session storage s, address[] memory nodes) private {
        for (uint256 i = 0; i < nodes.length; i++) {
            for (uint256 j = 0; j < s.ephemeralNodes.length; j++) {
                require(s.ephemeralNodes[j] != nodes[i], "node already in session");
            }
            INodePool(_pool).ephemeral(nodes[i]);
            s.ephemeralNodes.push(nodes[i]);
        }
        emit NewNodeAssignedToSession(s.id, nodes, s.ephemeralNodes.length, EPHEMERAL);
    }

    function _release(uint256 sessionId, address nodeAddress) private {
        INodePool(_pool).release(nodeAddress);
        emit NodeReleased(getNodeId(nodeAddress), sessionId);
    }

    function _removeAddress(address[] storage list, address item) private {
        for (uint256 i = 0; i < list.length; i++) {
            if (list[i] == item) {
                list[i] = list[list.length - 1];
                list.pop();
                return;
            }
        }
    }
}
