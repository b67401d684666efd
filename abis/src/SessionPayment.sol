// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20, ISessionV2} from "./Interfaces.sol";

/// @title SessionPayment (corlens devnet) -- an ASSUMED interface
/// @notice Cortensor publishes no ABI for its payment contract; these four events are
/// corlens's own. Flow: depositToSession (COR from the depositor into the session balance)
/// -> payFromSessionToNetwork (session balance -> network payment of one task; contract owner
/// or a router of the session) -> allocateNodePayments (that task's network payment -> node
/// pending balances, each (task, node) at most once) -> withdrawNodePayment (pending -> COR).
/// setFaults is devnet-only fault injection for auditor scenarios: `disableChecks` skips the
/// balance and duplicate checks, `eventSkew` is added to the amount logged by SessionDeposited
/// and NodePaymentWithdrawn while the token transfer keeps the true amount. The deployer owns
/// the contract for good: no Ownable here, so the ABI holds exactly the four assumed events.
contract SessionPayment {
    event SessionDeposited(uint256 indexed sessionId, address indexed depositor, uint256 amount);
    event NetworkPaid(uint256 indexed sessionId, uint256 indexed taskId, uint256 amount);
    event NodePaymentAllocated(uint256 indexed sessionId, uint256 indexed taskId, address indexed node, uint256 amount);
    event NodePaymentWithdrawn(address indexed node, address indexed to, uint256 amount);

    IERC20 public immutable token;
    address public immutable owner;
    address public session;
    bool public faultsUnchecked;
    int256 public faultsEventSkew;
    mapping(uint256 => uint256) public sessionBalance;
    mapping(uint256 => mapping(uint256 => uint256)) public networkPayment;
    mapping(uint256 => mapping(uint256 => uint256)) public networkBalance;
    mapping(uint256 => mapping(uint256 => mapping(address => bool))) public allocated;
    mapping(address => uint256) public pendingPayment;

    constructor(address corToken) {
        token = IERC20(corToken);
        owner = msg.sender;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "not owner");
        _;
    }

    modifier onlyPayer(uint256 sessionId) {
        require(
            msg.sender == owner || (session != address(0) && ISessionV2(session).getRouterIndex(sessionId, msg.sender) >= 0),
            "not owner or router"
        );
        _;
    }

    function setSession(address sessionV2) external onlyOwner {
        session = sessionV2;
    }

    function setFaults(bool disableChecks, int256 eventSkew) external onlyOwner {
        faultsUnchecked = disableChecks;
        faultsEventSkew = eventSkew;
    }

    function depositToSession(uint256 sessionId, uint256 amount) external {
        require(amount > 0, "zero amount");
        require(session == address(0) || ISessionV2(session).doesSessionExist(sessionId), "session not found");
        require(token.transferFrom(msg.sender, address(this), amount), "transfer failed");
        sessionBalance[sessionId] += amount;
        emit SessionDeposited(sessionId, msg.sender, _skewed(amount));
    }

    function payFromSessionToNetwork(uint256 sessionId, uint256 taskId, uint256 amount) external onlyPayer(sessionId) {
        require(amount > 0, "zero amount");
        require(faultsUnchecked || sessionBalance[sessionId] >= amount, "insufficient session balance");
        sessionBalance[sessionId] = _sub(sessionBalance[sessionId], amount);
        networkPayment[sessionId][taskId] += amount;
        networkBalance[sessionId][taskId] += amount;
        emit NetworkPaid(sessionId, taskId, amount);
    }

    function allocateNodePayments(uint256 sessionId, uint256 taskId, address[] calldata nodes, uint256[] calldata amounts)
        external
        onlyPayer(sessionId)
    {
        require(nodes.length == amounts.length, "length mismatch");
        for (uint256 i = 0; i < nodes.length; i++) {
            require(faultsUnchecked || !allocated[sessionId][taskId][nodes[i]], "already allocated");
            require(faultsUnchecked || amounts[i] <= networkBalance[sessionId][taskId], "exceeds network payment");
            allocated[sessionId][taskId][nodes[i]] = true;
            networkBalance[sessionId][taskId] = _sub(networkBalance[sessionId][taskId], amounts[i]);
            pendingPayment[nodes[i]] += amounts[i];
            emit NodePaymentAllocated(sessionId, taskId, nodes[i], amounts[i]);
        }
    }

    /// @notice Pays the caller's pending balance out in COR (limited by what this contract holds).
    function withdrawNodePayment(uint256 amount) external {
        require(amount > 0, "zero amount");
        require(faultsUnchecked || amount <= pendingPayment[msg.sender], "exceeds pending payment");
        pendingPayment[msg.sender] = _sub(pendingPayment[msg.sender], amount);
        require(token.transfer(msg.sender, amount), "transfer failed");
        emit NodePaymentWithdrawn(msg.sender, msg.sender, _skewed(amount));
    }

    function _sub(uint256 a, uint256 b) private pure returns (uint256) {
        return a > b ? a - b : 0;
    }

    function _skewed(uint256 amount) private view returns (uint256) {
        int256 logged = int256(amount) + faultsEventSkew;
        return logged > 0 ? uint256(logged) : 0;
    }
}
