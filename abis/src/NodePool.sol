// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Owned, NodeIdentity} from "./Owned.sol";

/// @title NodePool (corlens devnet)
/// @notice The miners known to the network. The owner adds and removes nodes; operator
/// contracts (SessionV2, SessionQueueV2) reserve a node for one session (dedicated), lend it
/// to any number of sessions (ephemeral, reference-counted), release it, and stamp its last
/// task assignment. Status ids: 0 none, 1 available, 2 ephemeral, 3 reserved, 4 released
/// (released nodes are available again).
contract NodePool is Owned, NodeIdentity {
    enum NodeStatus { None, Available, Ephemeral, Reserved, Released }

    struct NodeEntry {
        address nodeAddress;
        uint256 addedTimestamp;
        uint256 ephemeralTimestamp;
        uint256 reservedTimestamp;
        uint256 releasedTimestamp;
        uint256 sessionId;
        NodeStatus status;
    }

    event LastExecutionTimestampSet(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp, uint256 mode);
    event NodeAdded(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);
    event NodeEphemeral(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);
    event NodePoolForceModeResetAll(uint256 timestamp);
    event NodePoolModeReset(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);
    event NodeReleased(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);
    event NodeRemoved(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);
    event NodeReserved(bytes32 indexed nodeId, address indexed nodeAddress, uint256 timestamp);

    bytes32[] public nodeIds;
    mapping(bytes32 => uint256) public lastExecutionTimestamp;
    mapping(bytes32 => bool) public selfReportedMode;
    mapping(address => bool) public operators;
    mapping(bytes32 => NodeEntry) private _nodes;
    mapping(bytes32 => uint256) private _position; // index in nodeIds + 1
    mapping(bytes32 => uint256) private _ephemeralRefs;

    modifier onlyOperator() {
        require(operators[msg.sender] || msg.sender == owner(), "not operator");
        _;
    }

    function setOperator(address operator, bool allowed) external onlyOwner {
        operators[operator] = allowed;
    }

    function add(address addr) external onlyOwner {
        bytes32 id = getNodeId(addr);
        require(addr != address(0), "zero node");
        require(_position[id] == 0, "node exists");
        nodeIds.push(id);
        _position[id] = nodeIds.length;
        _nodes[id] = NodeEntry(addr, block.timestamp, 0, 0, 0, 0, NodeStatus.Available);
        emit NodeAdded(id, addr, block.timestamp);
    }

    function remove(address addr) external onlyOwner {
        bytes32 id = _existing(addr);
        NodeStatus status = _nodes[id].status;
        require(status != NodeStatus.Reserved && status != NodeStatus.Ephemeral, "node in use");
        uint256 index = _position[id] - 1;
        bytes32 last = nodeIds[nodeIds.length - 1];
        nodeIds[index] = last;
        _position[last] = index + 1;
        nodeIds.pop();
        delete _position[id];
        delete _nodes[id];
        emit NodeRemoved(id, addr, block.timestamp);
    }

    function reserveForSession(address addr, uint256 sessionId) external onlyOperator {
        bytes32 id = _existing(addr);
        NodeEntry storage node = _nodes[id];
        require(node.status == NodeStatus.Available || node.status == NodeStatus.Released, "node not available");
        node.status = NodeStatus.Reserved;
        node.sessionId = sessionId;
        node.reservedTimestamp = block.timestamp;
        emit NodeReserved(id, addr, block.timestamp);
    }

    function ephemeral(address addr) external onlyOperator {
        bytes32 id = _existing(addr);
        NodeEntry storage node = _nodes[id];
        require(node.status != NodeStatus.Reserved, "node reserved");
        _ephemeralRefs[id] += 1;
        node.status = NodeStatus.Ephemeral;
        node.ephemeralTimestamp = block.timestamp;
        emit NodeEphemeral(id, addr, block.timestamp);
    }

    /// @notice Ends a reservation, or drops one ephemeral use; the node is released (event)
    /// when nothing uses it any more.
    function release(address addr) external onlyOperator {
        bytes32 id = _existing(addr);
        NodeEntry storage node = _nodes[id];
        if (node.status == NodeStatus.Ephemeral) {
            _ephemeralRefs[id] -= 1;
            if (_ephemeralRefs[id] > 0) return;
        } else {
            require(node.status == NodeStatus.Reserved, "node not in use");
        }
        node.status = NodeStatus.Released;
        node.sessionId = 0;
        node.releasedTimestamp = block.timestamp;
        emit NodeReleased(id, addr, block.timestamp);
    }

    function setLastExecutionTimestampByNode(address addr) external onlyOperator {
        bytes32 id = _existing(addr);
        lastExecutionTimestamp[id] = block.timestamp;
        emit LastExecutionTimestampSet(id, addr, block.timestamp, uint256(_nodes[id].status));
    }

    function resetModeByNode(address addr) external onlyOwner {
        bytes32 id = _existing(addr);
        selfReportedMode[id] = false;
        emit NodePoolModeReset(id, addr, block.timestamp);
    }

    function forceResetModeAll() external onlyOwner {
        for (uint256 i = 0; i < nodeIds.length; i++) selfReportedMode[nodeIds[i]] = false;
        emit NodePoolForceModeResetAll(block.timestamp);
    }

    /// @notice Up to `max` nodes, in pool order, that are not reserved by a session.
    function getAvailableNodes(uint256 max) external view returns (address[] memory found) {
        found = new address[](max);
        uint256 n = 0;
        for (uint256 i = 0; i < nodeIds.length && n < max; i++) {
            NodeEntry storage node = _nodes[nodeIds[i]];
            if (node.status != NodeStatus.Reserved) found[n++] = node.nodeAddress;
        }
        assembly ("memory-safe") { mstore(found, n) }
    }

    function get(address addr) external view returns (NodeEntry memory) {
        return _nodes[getNodeId(addr)];
    }

    function getNodeInfo(bytes32 nodeId) external view returns (NodeEntry memory) {
        return _nodes[nodeId];
    }

    function getNodeStatus(address addr) external view returns (uint8) {
        return uint8(_nodes[getNodeId(addr)].status);
    }

    function doesNodeExist(bytes32 nodeId) external view returns (bool) {
        return _position[nodeId] != 0;
    }

    function getAssignedSessionId(bytes32 nodeId) external view returns (uint256) {
        return _nodes[nodeId].sessionId;
    }

    function getLastExecutionTimestampByNode(address addr) external view returns (uint256) {
        return lastExecutionTimestamp[getNodeId(addr)];
    }

    function getCount() external view returns (uint256) {
        return nodeIds.length;
    }

    function getAllNodes() external view returns (bytes32[] memory) {
        return nodeIds;
    }

    function getAllNodeAddresses() external view returns (address[] memory addrs) {
        addrs = new address[](nodeIds.length);
        for (uint256 i = 0; i < nodeIds.length; i++) addrs[i] = _nodes[nodeIds[i]].nodeAddress;
    }

    function _existing(address addr) private view returns (bytes32 id) {
        id = getNodeId(addr);
        require(_position[id] != 0, "node not found");
    }
}
