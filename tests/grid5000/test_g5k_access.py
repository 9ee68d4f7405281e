"""Which API, which credentials, what the API client makes of replies, and SSH through the gateway."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from g5k_helpers import FAST_RETRY, T0, make_server

from g5k_testbed.auth import AuthConfig
from vm5k.errors import EXIT_USAGE, UsageError
from vm5k.platforms.grid5000.access import gateway_ssh_config
from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.platforms.grid5000.credentials import (
    DEFAULT_API,
    ENV_API,
    CredentialsError,
    load_api_config,
)
from vm5k.remote import ConnectionPool, SshSettings


def write(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / ".python-grid5000.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_nothing_configured_is_an_error_never_the_real_api(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no Grid'5000 API configured: give --api URL, set VM5K_API"):
        load_api_config(None, environ={}, home=tmp_path, frontend=False)
    # the tests' HOME (tests/conftest.py) holds no credentials file: the default is refused there too
    with pytest.raises(UsageError):
        load_api_config(None, environ={}, frontend=False)


def test_sources_in_order(tmp_path: Path) -> None:
    assert load_api_config(None, environ={ENV_API: "http://127.0.0.1:1/stable/"}, home=tmp_path).uri == \
        "http://127.0.0.1:1/stable"
    assert load_api_config(None, environ={}, home=tmp_path, frontend=True).uri == DEFAULT_API
    write(tmp_path, "uri: http://127.0.0.1:2/3.0\n")
    assert load_api_config(None, environ={}, home=tmp_path).uri == "http://127.0.0.1:2/3.0"
    assert load_api_config("http://127.0.0.1:3/sid", environ={ENV_API: "http://x:4/"}, home=tmp_path).uri == \
        "http://127.0.0.1:3/sid"


def test_credentials_are_used_for_their_api_only_and_never_shown(tmp_path: Path) -> None:
    write(tmp_path, "username: alice\npassword: s3cret-pw\n")
    config = load_api_config(None, environ={}, home=tmp_path)
    assert config.uri == DEFAULT_API and config.username == "alice" and config.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(config) and config.record() == {"api": DEFAULT_API}
    elsewhere = load_api_config("http://127.0.0.1:8/stable", environ={}, home=tmp_path)
    assert elsewhere.username is None and elsewhere.password is None  # not sent to another host


def test_plain_http_never_carries_a_password_to_a_remote_host(tmp_path: Path) -> None:
    write(tmp_path, "uri: http://api.example.org/stable\nusername: alice\npassword: pw\n")
    with pytest.raises(CredentialsError, match="refusing to send the password"):
        load_api_config(None, environ={}, home=tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("username: [unclosed\n", "is not valid YAML"),
    ("- a list\n", "must be a YAML mapping"),
    ("username: alice\n", "username alice has no password"),
    ("password: pw\n", "a password is given without a username"),
    ("username: alice\npassword: pw\ntimeout: soon\n", "timeout must be a number"),
])
def test_broken_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, text)
    with pytest.raises(CredentialsError, match=message) as caught:
        load_api_config(None, environ={}, home=tmp_path)
    assert caught.value.exit_status == EXIT_USAGE
    assert str(tmp_path) in str(caught.value) and "pw\n" not in str(caught.value)


def test_a_readable_file_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "username: alice\npassword: topsecret\n", mode=0o644)
    with caplog.at_level(logging.WARNING):
        load_api_config(None, environ={}, home=tmp_path)
    assert "readable by everyone" in caplog.text and "chmod 600" in caplog.text
    assert "topsecret" not in caplog.text


def test_urls_with_credentials_are_refused() -> None:
    with pytest.raises(UsageError, match="do not put credentials in the URL"):
        load_api_config("https://alice:pw@api.grid5000.fr/stable", environ={}, home="/nonexistent")


def test_server_clock_comes_from_the_replies() -> None:
    server = make_server(sites=["nancy"])
    try:
        api = ApiClient(load_api_config(server.url, environ={}, home="/nonexistent"), retry=FAST_RETRY)
        assert api.server_now() == T0  # not this machine's clock
        server.advance(3600)
        api.get("/sites")
        assert api.server_now() == T0 + 3600
    finally:
        server.stop()


def test_api_errors_are_one_line_with_status() -> None:
    server = make_server(sites=["nancy"])
    try:
        api = ApiClient(load_api_config(server.url, environ={}, home="/nonexistent"), retry=FAST_RETRY)
        with pytest.raises(ApiError) as caught:
            api.get("/sites/nowhere")
        assert caught.value.status == 404 and not caught.value.transient
        assert "Cannot find resource /sites/nowhere" in str(caught.value) and "\n" not in str(caught.value)
        server.testbed.faults.reconfigure({"error_rate": 1.0, "error_codes": [503]})
        with pytest.raises(ApiError) as caught:
            api.get("/sites")
        assert caught.value.status == 503 and caught.value.transient
    finally:
        server.stop()


def test_a_401_is_a_credentials_error(tmp_path: Path) -> None:
    server = make_server(sites=["nancy"], auth=AuthConfig(users={"alice": "right"}, inside_user="alice"))
    try:
        port = server.url.split(":")[2].split("/")[0]
        write(tmp_path, f"uri: http://127.0.0.1:{port}/stable\nusername: alice\npassword: wrong\n")
        api = ApiClient(load_api_config(None, environ={}, home=tmp_path), retry=FAST_RETRY)
        with pytest.raises(CredentialsError, match="refused the credentials of alice") as caught:
            api.get("/sites")
        assert "wrong" not in str(caught.value)
        assert base64.b64encode(b"alice:wrong").decode() not in str(caught.value)
        write(tmp_path, f"uri: http://127.0.0.1:{port}/stable\nusername: alice\npassword: right\n")
        assert ApiClient(load_api_config(None, environ={}, home=tmp_path)).get("/sites")["total"] == 1
    finally:
        server.stop()


def test_gateway_config_jumps_to_nodes_as_root(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(gateway_ssh_config("alice"))
    pool = ConnectionPool(SshSettings(config_files=(path,)))
    node = pool.resolve("paradoxe-1.rennes.grid5000.fr")
    assert node.user == "root" and node.proxy_jump == ("access.grid5000.fr",)
    gateway = pool.resolve("access.grid5000.fr")
    assert gateway.user == "alice" and gateway.proxy_jump == ()
    with pytest.raises(UsageError):
        gateway_ssh_config("alice\nProxyCommand evil")
