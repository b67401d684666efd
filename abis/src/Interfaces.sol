// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice The calls the devnet contracts make into each other.
interface IERC20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
}

interface INodePool {
    function getAvailableNodes(uint256 max) external view returns (address[] memory);
    function reserveForSession(address addr, uint256 sessionId) external;
    function ephemeral(address addr) external;
    function release(address addr) external;
    function setLastExecutionTimestampByNode(address addr) external;
}

interface ISessionV2 {
    function doesSessionExist(uint256 sessionId) external view returns (bool);
    function getRouterIndex(uint256 sessionId, address routerAddress) external view returns (int256);
    function getModelIdentifier(uint256 sessionId) external view returns (uint256);
    function isSessionNode(uint256 sessionId, address nodeAddress) external view returns (bool);
    function onTaskAssigned(uint256 sessionId, uint256 taskId, address[] calldata miners) external;
}

interface ISessionQueueV2 {
    function enqueueTask(
        uint256 sessionId,
        string calldata taskData,
        uint256 promptType,
        string calldata promptTemplate,
        uint256[] calldata llmParams,
        uint256[] calldata requestParams
    ) external returns (uint256);
}
