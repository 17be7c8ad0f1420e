"""Guards that need no running server: token signing, the refusal to expose open feedback,
the CLI's checks of its serving options, strict version names and config files, and error
bodies that carry no server path and no exception text (the app driven in process)."""

from __future__ import annotations

import json
import pickle
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from directrec.cli import app as cli
from directrec.models.artifacts import read_dir
from directrec.serve import registry
from directrec.serve.app import app_from_env, config_to_env, create_app
from directrec.serve.batcher import BatchFailed
from directrec.serve.protocol import HeaderTimeoutProtocol, protocol_with
from directrec.serve.service import ServeConfig
from directrec.serve.tokens import (
    TokenError,
    check_exposure,
    is_loopback,
    issue,
    read_key,
    verify,
)
from tests.serve.conftest import TOKEN

KEY = b"a-test-key-of-enough-bytes"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
runner = CliRunner()


def run(*args: object, env: dict | None = None):
    return runner.invoke(cli, [str(a) for a in args], env=env)


# --------------------------------------------------------------------------- tokens
def test_tokens_name_their_user_and_reject_expired_tampered_and_foreign_ones():
    token = issue(KEY, "user:ä.1", expires_in=60)  # any user id, dots and all
    assert verify(KEY, token) == "user:ä.1"
    assert verify(KEY, issue(KEY, "u")) == "u"  # no expiry
    with pytest.raises(TokenError, match="expired"):
        verify(KEY, token, now=time.time() + 61)
    user, expires, sig = token.split(".")
    for bad in (
        f"{issue(KEY, 'other').split('.')[0]}.{expires}.{sig}",  # another user
        f"{user}.{int(expires) + 3600}.{sig}",  # a later expiry
        f"{user}.0.{sig}",  # no expiry
        f"{user}.{expires}.{sig[:-4]}",  # a cut signature
    ):
        with pytest.raises(TokenError, match="signature"):
            verify(KEY, bad)
    with pytest.raises(TokenError, match="signature"):
        verify(b"another-key-of-enough-bytes", token)
    for bad in (
        *("", "a.b", "a.-1.c", "@@@.1.@@@", "a+/b.1.c", "a.1.b.c", f"{user}.{expires}.x"),
        f"{user}.\u00b2.{sig}",  # a digit to str.isdigit, not to int()
        f"{user}.{'9' * 5000}.{sig}",  # more digits than int() converts
    ):
        with pytest.raises(TokenError, match="malformed"):
            verify(KEY, bad)


def test_token_keys_are_long_enough_and_read_from_a_file(tmp_path):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        read_key("short", None)
    (tmp_path / "key").write_text(KEY.decode() + "\n")
    assert read_key(None, tmp_path / "key") == KEY
    assert read_key(None, None) is None
    with pytest.raises(ValueError, match="not both"):
        read_key(KEY.decode(), tmp_path / "key")
    with pytest.raises(ValueError, match="missing"):
        read_key(None, tmp_path / "missing")


def test_open_feedback_is_refused_beyond_loopback_unless_asked():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_exposure(host, None, None, False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="--open-feedback"):
            check_exposure(host, None, None, False)
        check_exposure(host, "shared", None, False)
        check_exposure(host, None, KEY, False)
        check_exposure(host, None, None, True)


# --------------------------------------------------------------------------- CLI
def test_serve_refuses_open_feedback_on_a_public_host_and_empty_tokens(tmp_path):
    names = ("DIRECTREC_ADMIN_TOKEN", "DIRECTREC_TOKEN_KEY", "DIRECTREC_FEEDBACK_TOKEN")
    env = dict.fromkeys(names)  # none taken from the environment running the tests
    base = ("serve", "--model", tmp_path / "none", "--db", tmp_path / "none.duckdb")
    # Refused before anything is loaded or bound (the model path does not even exist).
    res = run(*base, "--host", "0.0.0.0", env=env)
    assert res.exit_code == 2 and "--open-feedback" in res.output
    for flag in ("--admin-token", "--feedback-token"):
        res = run(*base, flag, "", env=env)
        assert res.exit_code == 2 and f"{flag} must not be empty" in res.output
    res = run(*base, "--token-key", "short", env=env)
    assert res.exit_code == 2 and "at least 16 bytes" in res.output
    res = run("serve", "--help")
    for flag in ("--header-timeout", "--body-timeout", "--token-key", "--open-feedback"):
        assert flag in res.output


def test_token_command_issues_tokens_the_server_key_verifies(tmp_path):
    env = {"DIRECTREC_TOKEN_KEY": None}
    res = run("token", "--user", "u1", "--key", KEY.decode(), "--expires-in", 60, env=env)
    assert res.exit_code == 0, res.output
    token = res.output.strip()
    assert verify(KEY, token) == "u1"
    assert 50 < int(token.split(".")[1]) - time.time() <= 60
    (tmp_path / "key").write_text(KEY.decode())
    res = run("token", "--user", "u2", "--key-file", tmp_path / "key", env=env)
    assert verify(KEY, res.output.strip()) == "u2"
    res = run("token", "--user", "u3", env={"DIRECTREC_TOKEN_KEY": KEY.decode()})
    assert verify(KEY, res.output.strip()) == "u3"
    res = run("token", "--user", "u1", env=env)
    assert res.exit_code == 2 and "--key" in res.output
    res = run("token", "--user", "u1", "--key", "short", env=env)
    assert res.exit_code == 2 and "at least 16 bytes" in res.output


def test_workers_get_the_same_deadlines_and_token_key(tmp_path, monkeypatch):
    cfg = ServeConfig(
        model=tmp_path, db="x.duckdb", header_timeout=1.5, body_timeout=2.5, token_key="k" * 16
    )
    spec = json.loads(config_to_env(cfg))["config"]
    assert (spec["header_timeout"], spec["body_timeout"], spec["token_key"]) == (1.5, 2.5, "k" * 16)
    # uvicorn pickles its config (with the protocol) into each worker process.
    proto = pickle.loads(pickle.dumps(protocol_with(1.5)))
    assert proto.func is HeaderTimeoutProtocol and proto.keywords == {"header_timeout": 1.5}
    seen = []
    monkeypatch.setenv("DIRECTREC_SERVE_CONFIG", config_to_env(cfg))
    monkeypatch.setattr("directrec.serve.app.create_app", lambda c: seen.append(c) or FastAPI())
    app_from_env()
    assert seen[0].body_timeout == 2.5 and seen[0].token_key == "k" * 16


# --------------------------------------------------------------------------- artefacts
def test_version_names_are_matched_whole(tmp_path):
    (tmp_path / "v0001").mkdir()
    (tmp_path / "v0002\n").mkdir()
    assert registry.versions(tmp_path) == ["v0001"]
    with pytest.raises(ValueError, match="not a version name"):
        registry.resolve(tmp_path, "v0001\n")
    (tmp_path / "CURRENT").write_text("v0001\n\n")  # whitespace around a name is fine
    assert registry.current(tmp_path) == "v0001"


def test_config_files_of_the_wrong_shape_are_named(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: must hold a JSON object, not a list"):
        registry.publish(model, tmp_path / "reg")
    res = run("publish", "--model", model, "--registry", tmp_path / "reg")
    assert res.exit_code == 2 and "config.json: must hold a JSON object" in res.output
    assert "unexpected" not in res.output
    (model / "config.json").write_text(json.dumps({"model": "pop", "format_version": 2}))
    with pytest.raises(ValueError, match=r"config\.json: field 'config' is missing"):
        read_dir(model, "pop")
    (model / "config.json").write_text(
        json.dumps(
            {"model": "pop", "format_version": 2, "config": {}, "n_users": "9", "n_items": 1}
        )
    )
    with pytest.raises(ValueError, match="field 'n_users' must be a JSON integer"):
        read_dir(model, "pop")


# --------------------------------------------------------------------------- error bodies
@pytest.fixture
def client(own_world):
    """The app in process, without its lifespan (no model loaded): the error paths."""
    db, reg = own_world
    app = create_app(ServeConfig(model=reg, db=db, admin_token=TOKEN, max_body=1000))

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError(f"secret state at {reg}/weights")

    c = TestClient(app, raise_server_exceptions=False)  # not `with`: no lifespan
    yield c, app.state.service, str(db.parent)
    c.close()
    app.state.service.histories.close()
    app.state.service.feedback.close()


def no_leak(body: str, root: str) -> None:
    assert root not in body and "/tmp" not in body and "secret" not in body, body


def test_errors_carry_no_server_path_and_no_exception_text(client, monkeypatch):
    c, svc, root = client
    r = c.get("/crash")
    assert r.status_code == 500 and len(r.json()["error"]["error_id"]) == 12
    no_leak(r.text, root)

    r = c.post("/v1/admin/reload", json={"version": "v0009"}, headers=ADMIN)  # not there
    assert r.status_code == 409 and "v0009: missing or unreadable" in r.json()["error"]["message"]
    no_leak(r.text, root)
    r = c.post("/v1/admin/reload", json={"version": "v0001\n"}, headers=ADMIN)
    assert r.status_code == 409 and "not a version name" in r.text

    def explode(version=None):
        raise RuntimeError(f"secret internals of {root}")

    monkeypatch.setattr(svc, "load", explode)
    r = c.post("/v1/admin/reload", json={}, headers=ADMIN)
    assert r.status_code == 409 and "error id" in r.json()["error"]["message"]
    no_leak(r.text, root)

    class FailingBatcher:
        alive = True

        async def submit(self, job):
            raise BatchFailed(f"secret tensor error in {root}/model.py")

    user = svc.histories.users(1)[0]
    monkeypatch.setattr(svc, "ready", True)
    monkeypatch.setattr(svc, "batcher", FailingBatcher())
    r = c.get(f"/v1/users/{user}/recommendations")
    assert r.status_code == 500 and r.json()["error"]["error_id"]
    no_leak(r.text, root)

    svc.updates.jobs["00ff"] = {"job_id": "00ff", "status": "failed", "error": f"{root}: secret"}
    r = c.get("/v1/admin/jobs/00ff", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    no_leak(r.text, root)

    r = c.post("/v1/feedback", content=b"x" * 2000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_the_app_refuses_empty_tokens_and_short_keys(own_world):
    db, reg = own_world
    for bad in ({"admin_token": ""}, {"feedback_token": ""}):
        with pytest.raises(ValueError, match="must not be empty"):
            create_app(ServeConfig(model=reg, db=db, **bad))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        create_app(ServeConfig(model=reg, db=db, token_key="short"))
