// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice Single-owner access control with the OpenZeppelin Ownable event, so the devnet
/// contracts declare the same OwnershipTransferred signature as the public Cortensor ABIs.
abstract contract Owned {
    address private _owner;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    constructor() {
        _setOwner(msg.sender);
    }

    modifier onlyOwner() {
        require(msg.sender == _owner, "not owner");
        _;
    }

    function owner() public view returns (address) {
        return _owner;
    }

    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "zero owner");
        _setOwner(newOwner);
    }

    function renounceOwnership() external onlyOwner {
        _setOwner(address(0));
    }

    function _setOwner(address newOwner) private {
        address previous = _owner;
        _owner = newOwner;
        emit OwnershipTransferred(previous, newOwner);
    }
}

/// @notice Node ids as Cortensor derives them from a node's address (`getNodeId(address) pure`).
abstract contract NodeIdentity {
    function getNodeId(address addr) public pure returns (bytes32) {
        return bytes32(uint256(uint160(addr)));
    }
}
