// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Owned, NodeIdentity} from "./Owned.sol";

/// @title CognitiveV1 (corlens devnet)
/// @notice Network-task rounds driven by oracle nodes and miners, one round open at a time,
/// ids from 0. Order: request (oracle; a creator oracle is assigned) -> create (that creator;
/// a preparer oracle is assigned) -> prepare (that preparer) -> start (oracle; selects miners)
/// -> precommit (selected miners; all precommitted, or endPrecommit by an oracle, closes it)
/// -> commit (miners that precommitted; completion must hash to the precommit; all committed
/// closes it) -> end (oracle; forceEnd allows any time after start). State ids: 0 none,
/// 1 requested, 2 created, 3 prepared, 4 started, 5 precommitted, 6 committed, 7 ended.
contract CognitiveV1 is Owned, NodeIdentity {
    enum SessionState { None, Requested, Created, Prepared, Started, Precommitted, Committed, Ended }

    struct Session {
        uint256 id;
        uint256 timestamp;
        uint256 seed;
        string domain;
        string subdomain;
        uint256 maxPrompts;
        uint256 challengeIndex;
        string[] challenges;
        address[] miners;
        SessionState state;
        uint256 startTimestamp;
        uint256 endTimestamp;
        address creator;
        address[] preparers;
        uint256 preparerIndex;
        bytes32[] submitterIds;
        bytes32[] completionHashes;
        string[] completions;
        uint256 completionCounter;
        address[] validators;
    }

    event NewSessionRequest(uint256 indexed id, address[] addrs);
    event NewSessionRequestAssigned(uint256 indexed id, address addr);
    event SessionAllCommitted(uint256 indexed id, address[] addrs);
    event SessionAllPrecommitted(uint256 indexed id, address[] addrs, bool forceEnd);
    event SessionCommitted(uint256 indexed id, address indexed addr);
    event SessionCreated(uint256 indexed id, address indexed addr);
    event SessionEnded(uint256 indexed id, uint256 endTimestamp);
    event SessionPrecommitted(uint256 indexed id, address indexed addr);
    event SessionPrepareAssigned(uint256 indexed id, address addr);
    event SessionPrepared(uint256 indexed id, address indexed addr);
    event SessionStarted(uint256 indexed id, uint256 startTimestamp, address[] addrs);

    uint256 public sessionCounter;
    uint256 public requestCounter;
    uint256 public thresholdMiner = 3;
    address[] private _oracles;
    address[] private _minerSet;
    mapping(address => bool) private _isOracle;
    mapping(uint256 => Session) private _rounds;
    mapping(uint256 => address[]) private _precommitters;
    mapping(uint256 => address[]) private _committers;
    // 0 none, 1 selected, 2 precommitted, 3 committed
    mapping(uint256 => mapping(address => uint8)) private _minerState;
    mapping(uint256 => mapping(address => bytes32)) private _hashes;

    modifier onlyOracle() {
        require(_isOracle[msg.sender], "not oracle");
        _;
    }

    function addOracle(address oracle) external onlyOwner {
        require(!_isOracle[oracle], "oracle exists");
        _isOracle[oracle] = true;
        _oracles.push(oracle);
    }

    function setMiners(address[] calldata miners) external onlyOwner {
        _minerSet = miners;
    }

    function setThresholdMiner(uint256 _thresholdMiner) external onlyOwner {
        require(_thresholdMiner > 0, "zero miners");
        thresholdMiner = _thresholdMiner;
    }

    // ---- round lifecycle ----------------------------------------------------------------

    function request() external onlyOracle {
        require(sessionCounter == 0 || _rounds[sessionCounter - 1].state == SessionState.Ended, "round in progress");
        uint256 id = sessionCounter++;
        requestCounter++;
        Session storage s = _rounds[id];
        s.id = id;
        s.timestamp = block.timestamp;
        s.state = SessionState.Requested;
        s.creator = _oracles[id % _oracles.length];
        emit NewSessionRequest(id, _oracles);
        emit NewSessionRequestAssigned(id, s.creator);
    }

    function create(string calldata domain, string calldata subdomain) external returns (uint256 id) {
        require(sessionCounter > 0, "no pending request");
        id = sessionCounter - 1;
        Session storage s = _rounds[id];
        require(s.state == SessionState.Requested, "no pending request");
        require(msg.sender == s.creator, "not assigned creator");
        s.domain = domain;
        s.subdomain = subdomain;
        s.seed = uint256(keccak256(abi.encode(id, domain, subdomain)));
        s.state = SessionState.Created;
        s.preparers.push(_oracles[(id + 1) % _oracles.length]);
        emit SessionCreated(id, msg.sender);
        emit SessionPrepareAssigned(id, s.preparers[0]);
    }

    function prepare(uint256 id, string[] calldata challenges, bytes calldata signature, uint256 seed) external {
        (signature, seed); // proof of work on the real network; unused here
        Session storage s = _rounds[id];
        require(s.state == SessionState.Created, "not created");
        require(msg.sender == s.preparers[s.preparerIndex], "not assigned preparer");
        require(challenges.length > 0, "no challenges");
        for (uint256 i = 0; i < challenges.length; i++) s.challenges.push(challenges[i]);
        s.maxPrompts = challenges.length;
        s.state = SessionState.Prepared;
        emit SessionPrepared(id, msg.sender);
    }

    /// @notice Selects thresholdMiner miners from the miner set, starting at seed % size.
    function start(uint256 id) external onlyOracle {
        Session storage s = _rounds[id];
        require(s.state == SessionState.Prepared, "not prepared");
        uint256 size = _minerSet.length;
        require(size > 0, "no miners");
        uint256 count = thresholdMiner < size ? thresholdMiner : size;
        for (uint256 i = 0; i < count; i++) {
            address miner = _minerSet[(s.seed + i) % size];
            s.miners.push(miner);
            _minerState[id][miner] = 1;
        }
        s.challengeIndex = s.seed % s.challenges.length;
        s.state = SessionState.Started;
        s.startTimestamp = block.timestamp;
        emit SessionStarted(id, block.timestamp, s.miners);
    }

    function precommit(uint256 id, bytes32 hash, bytes calldata signature, uint256 seed) external {
        (signature, seed);
        Session storage s = _rounds[id];
        require(s.state == SessionState.Started, "precommit closed");
        uint8 state = _minerState[id][msg.sender];
        require(state != 0, "not selected");
        require(state == 1, "already precommitted");
        _minerState[id][msg.sender] = 2;
        _hashes[id][msg.sender] = hash;
        _precommitters[id].push(msg.sender);
        s.submitterIds.push(getNodeId(msg.sender));
        s.completionHashes.push(hash);
        emit SessionPrecommitted(id, msg.sender);
        if (_precommitters[id].length == s.miners.length) {
            s.state = SessionState.Precommitted;
            emit SessionAllPrecommitted(id, _precommitters[id], false);
        }
    }

    function endPrecommit(uint256 id) external onlyOracle {
        Session storage s = _rounds[id];
        require(s.state == SessionState.Started, "not started");
        require(_precommitters[id].length > 0, "no precommits");
        s.state = SessionState.Precommitted;
        emit SessionAllPrecommitted(id, _precommitters[id], true);
    }

    function commit(uint256 id, string calldata completion, bytes calldata signature, uint256 seed) external {
        (signature, seed);
        Session storage s = _rounds[id];
        require(s.state != SessionState.Started, "precommit not ended");
        require(s.state == SessionState.Precommitted, "commit closed");
        uint8 state = _minerState[id][msg.sender];
        require(state != 3, "already committed");
        require(state == 2, "not precommitted");
        require(keccak256(bytes(completion)) == _hashes[id][msg.sender], "hash mismatch");
        _minerState[id][msg.sender] = 3;
        _committers[id].push(msg.sender);
        s.completions.push(completion);
        s.completionCounter++;
        emit SessionCommitted(id, msg.sender);
        if (_committers[id].length == _precommitters[id].length) {
            s.state = SessionState.Committed;
            emit SessionAllCommitted(id, _committers[id]);
        }
    }

    function end(uint256 id, bool forceEnd) external onlyOracle {
        Session storage s = _rounds[id];
        require(s.state != SessionState.Ended, "already ended");
        if (forceEnd) require(s.state >= SessionState.Started, "not started");
        else require(s.state == SessionState.Committed, "not committed");
        s.state = SessionState.Ended;
        s.endTimestamp = block.timestamp;
        emit SessionEnded(id, block.timestamp);
    }

    // ---- views --------------------------------------------------------------------------

    function get(uint256 id) external view returns (Session memory) { return _rounds[id]; }
    function getSessionState(uint256 id) external view returns (uint8) { return uint8(_rounds[id].state); }
    function isOracleNode(address addr) external view returns (bool) { return _isOracle[addr]; }
    function alreadyPrecommitted(uint256 id, address miner) external view returns (bool) { return _minerState[id][miner] >= 2; }
    function alreadyCommitted(uint256 id, address miner) external view returns (bool) { return _minerState[id][miner] == 3; }

    function getLatestSessionId() external view returns (uint256) {
        require(sessionCounter > 0, "no rounds");
        return sessionCounter - 1;
    }
}
