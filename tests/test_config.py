"""Configuration: YAML, CORLENS_* overrides, ${ENV} secrets, errors that name the key (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.config import load_settings
from indexer.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ADDR = "0x2e9cC638CF07efdeC82b4beF932Ca4a8Dcd55015"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


BASE = f"""
database_url: sqlite:///x.db
chains:
  - name: t0
    preset: testnet0
    rpc_urls: ["https://rpc.example/${{KEY}}"]
    contracts:
      SessionV2: {{address: "{ADDR}", start_block: 5}}
"""


def test_preset_fills_chain_facts(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE), env={"KEY": "sekret"})
    c = s.chain("t0")
    assert c.chain_id == 421614
    assert c.explorer_url == "https://sepolia.arbiscan.io" and c.explorer_kind == "etherscan"
    assert c.dashboard_url == "https://dashboard-testnet0.cortensor.network"
    assert c.rpc_urls == ["https://rpc.example/sekret"]
    assert c.contracts["SessionV2"].address == ADDR.lower()
    assert c.start_for("SessionV2") == 5


def test_testnet1a_and_local_presets(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, """
chains:
  - {name: l3, preset: testnet1a, rpc_urls: ["http://x"]}
  - {name: dev, preset: local, rpc_urls: ["http://127.0.0.1:8545"]}
"""), env={})
    l3, dev = s.chain("l3"), s.chain("dev")
    assert (l3.chain_id, l3.parent_chain_id, l3.explorer_kind) == (18964747554, 421614,
                                                                    "blockscout")
    assert (dev.chain_id, dev.explorer_kind) == (31337, "corlens")


def test_env_overrides_top_level_nested_and_per_chain(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE), env={
        "KEY": "k",
        "CORLENS_DATABASE_URL": "postgresql://u@h/db",
        "CORLENS_GATEWAY__WAIT_TIMEOUT": "2.5",
        "CORLENS_CHAINS__T0__RPC_URLS": '["http://a", "http://b"]',
        "CORLENS_CHAINS__T0__MAX_REORG_DEPTH": "12",
    })
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.gateway["wait_timeout"] == 2.5
    assert s.chain("t0").rpc_urls == ["http://a", "http://b"]
    assert s.chain("t0").max_reorg_depth == 12


def test_config_env_var_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, BASE)
    s = load_settings(None, env={"CORLENS_CONFIG": str(p), "KEY": "k"})
    assert s.chain("t0").chain_id == 421614


@pytest.mark.parametrize(
    ("text", "env", "key", "problem"),
    [
        (BASE, {}, "chains[t0].rpc_urls[0]", "${KEY}"),
        (BASE.replace(ADDR, "0x1234"), {"KEY": "k"}, "chains[t0].contracts.SessionV2.address",
         "not a 20-byte hex address"),
        (BASE.replace("preset: testnet0", "preset: mainnet"), {"KEY": "k"}, "chains[t0].preset",
         "testnet0"),
        (BASE.replace("SessionV2:", "Bogus:"), {"KEY": "k"}, "chains[t0]", "unknown contract"),
        ("chains:\n  - {name: x, rpc_urls: ['http://a']}\n", {}, "chains[x]",
         "chain_id is required"),
        ("database_url: mysql://x\n", {}, "database_url", "sqlite"),
        ("chains: [\n", {}, "c.yaml", "not valid YAML"),
        (BASE + "surprise: 1\n", {"KEY": "k"}, "surprise", "Extra inputs"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['ftp://a']}\n", {},
         "chains[x].rpc_urls", "http://"),
        # Found by a bad-input audit: each of these gave a traceback further on.
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://[::1']}\n", {},
         "chains[x].rpc_urls", "not a valid URL"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://']}\n", {},
         "chains[x].rpc_urls", "no host"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://a:99999']}\n", {},
         "chains[x].rpc_urls", "not a valid URL"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://a'], "
         "start_block: 99999999999999999999999}\n", {}, "chains[x].start_block", "less than"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://a'], poll_interval: .inf}\n",
         {}, "chains[x].poll_interval", "finite number"),
        ("chains:\n  - {name: x, preset: local, rpc_urls: ['http://a'], poll_interval: .nan}\n",
         {}, "chains[x].poll_interval", "finite number"),
        ("chains:\n  - {name: x, chain_id: 99999999999999999999, rpc_urls: ['http://a']}\n", {},
         "chains[x].chain_id", "less than"),
        (BASE.replace("start_block: 5", "start_block: 99999999999999999999"), {"KEY": "k"},
         "chains[t0].contracts.SessionV2.start_block", "less than"),
        ("database_url: sqlite://relhost/x.db\n", {}, "database_url", "names no host"),
        ("redis_url: notaurl\n", {}, "redis_url", "redis://"),
        ("public_url: 'javascript:alert(1)//'\n", {}, "public_url", "absolute http://"),
        ("public_url: not a url\n", {}, "public_url", "absolute http://"),
        ("public_url: /relative\n", {}, "public_url", "absolute http://"),
        ("public_url: 'https://h:99999'\n", {}, "public_url", "not a valid URL"),
        ("public_url: 'https://h/a b'\n", {}, "public_url", "no spaces"),
        ("database_url: postgresql://postgres@127.0.0.1:notaport/test\n", {}, "database_url",
         "postgresql+psycopg://"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str,
                             problem: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(write(tmp_path, text), env=env)
    assert key in ei.value.key, str(ei.value)
    assert problem in str(ei.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config: file .*nope.yaml does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="CORLENS_CONFIG: file .*gone.yaml does not exist"):
        load_settings(None, env={"CORLENS_CONFIG": str(tmp_path / "gone.yaml")})


def test_unknown_chain_override_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.chdir(tmp_path)  # no ./corlens.yaml
    with pytest.raises(ConfigError, match="CORLENS_CHAINS__NOPE__RPC_URLS: no chain named 'nope'"):
        load_settings(write(tmp_path, BASE), env={"KEY": "k",
                                                  "CORLENS_CHAINS__NOPE__RPC_URLS": "[]"})
    # The same with no config file (no chains at all), not a type error about the list.
    with pytest.raises(ConfigError, match="CORLENS_CHAINS__LOCAL__RPC_URLS: no chain named "
                                          "'local' to override"):
        load_settings(None, env={"CORLENS_CHAINS__LOCAL__RPC_URLS": '["http://x"]'})
    # An item of a list of values is not a chain: the message says to set the whole list.
    with pytest.raises(ConfigError, match="CORLENS_CHAINS__T0__RPC_URLS__0: names an item of a "
                                          "list: set the whole list"):
        load_settings(write(tmp_path, BASE), env={"KEY": "k",
                                                  "CORLENS_CHAINS__T0__RPC_URLS__0": "http://b"})


def test_shipped_examples_load() -> None:
    s = load_settings(ROOT / "examples" / "testnet0.yaml", env={})
    c = s.chain("testnet0")
    assert c.contracts["SessionV2"].address == ADDR.lower()
    assert c.rpc_urls[0].startswith("https://")
    s1 = load_settings(ROOT / "examples" / "testnet1a.yaml", env={
        "TESTNET1A_RPC_URL": "https://l3.example", "TESTNET1A_SESSIONV2": ADDR})
    assert s1.chain("testnet1a").chain_id == 18964747554


def test_unreadable_config_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot be read"):
        load_settings(tmp_path, env={})
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00chains: []")
    with pytest.raises(ConfigError, match="b.yaml: is not UTF-8 text"):
        load_settings(binary, env={})


def test_env_overrides_reach_contracts_and_keep_hex_and_digits_as_strings(tmp_path: Path
                                                                          ) -> None:
    """A contract's address by its variable (the name is upper case, the contract's is not),
    and a text setting's value kept as written (YAML would read an address as a hexadecimal
    number and 0777 as octal), while a number setting still takes YAML's forms."""
    other = "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0"
    s = load_settings(write(tmp_path, BASE), env={
        "KEY": "k",
        "CORLENS_CHAINS__T0__CONTRACTS__SESSIONV2__ADDRESS": other,
        "CORLENS_CHAINS__T0__CONTRACTS__NODEPOOL__ADDRESS": ADDR,
        "CORLENS_ADMIN_TOKEN": "0777",  # not YAML's octal 511: a text setting stays text
        "CORLENS_CHAINS__T0__START_BLOCK": "0x10",  # a number setting still reads hex
    })
    contracts = s.chain("t0").contracts
    assert contracts["SessionV2"].address == other
    assert contracts["SessionV2"].start_block == 5  # the rest of the file's entry is kept
    assert contracts["NodePool"].address == ADDR.lower()
    assert s.admin_token == "0777"
    assert s.chain("t0").start_block == 16
