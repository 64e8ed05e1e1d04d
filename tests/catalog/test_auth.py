"""Authenticated writes: with a write token, every POST/PUT/PATCH/DELETE needs
it as a bearer token (401 otherwise) and a JSON content type (415 otherwise);
reads stay public. In process, on a seeded SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog.app import create_app
from catalog.config import Settings
from starlette.testclient import TestClient

TOKEN = "s3cret-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRITES = [("POST", "/products", {"name": "new", "category_id": 1, "price": "1.00"}),
          ("PATCH", "/products/2", {"name": "renamed"}),
          ("PUT", "/products/2/price", {"price": "2.00"}),
          ("PUT", "/products/2/stock", {"stock": 3}),
          ("PATCH", "/categories/1", {"name": "cat"}),
          ("PATCH", "/countries/DE", {"name": "Deutschland"}),
          ("DELETE", "/products/3", None)]


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, node_name="auth-node", write_token=TOKEN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _error(response: object, status: int, code: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json()["error"] == code  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer",
                                           f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}"])
def test_write_without_the_token_is_401(client: TestClient, method: str, path: str,
                                        body: object, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = client.get("/products/2").json()
    response = client.request(method, path, json=body, headers=headers)
    _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/products/2").json() == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_write_with_the_token_succeeds(client: TestClient, method: str, path: str,
                                       body: object) -> None:
    response = client.request(method, path, json=body, headers=AUTH)
    assert response.status_code in (200, 201, 204), response.text


def test_bearer_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.put("/products/2/price", json={"price": "4.00"},
                          headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200, response.text


def test_reads_stay_public(client: TestClient) -> None:
    for path in ("/products/1", "/products", "/categories", "/categories/1", "/countries",
                 "/policies", "/healthz", "/readyz", "/openapi.json"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x",
                                          "application/jsonx"])
def test_non_json_body_is_415(client: TestClient, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.put("/products/2/price", content=b'{"price": "9.00"}', headers=headers)
    _error(response, 415, "unsupported_media_type")
    assert client.get("/products/2").json()["price"] != "9.00"


def test_json_with_charset_is_accepted(client: TestClient) -> None:
    response = client.put("/products/2/price", content=b'{"price": "9.00"}',
                          headers={**AUTH, "Content-Type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 200, response.text


def test_unauthenticated_comes_before_content_type(client: TestClient) -> None:
    """No hint about the body format to someone who may not write at all."""
    response = client.put("/products/2/price", content=b"price=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    _error(response, 401, "unauthorized")


def test_without_a_token_writes_are_open(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, node_name="open")
    with TestClient(create_app(settings)) as c:
        assert c.put("/products/2/price", json={"price": "5.00"}).status_code == 200
        # ... but still JSON only.
        _error(c.put("/products/2/price", content=b"x", headers={"Content-Type": "text/plain"}),
               415, "unsupported_media_type")


def test_openapi_declares_the_bearer_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["writeToken"] == {"type": "http",
                                                                  "scheme": "bearer"}
    assert doc["paths"]["/products/{id}/price"]["put"]["security"] == [{"writeToken": []}]
    assert "security" not in doc["paths"]["/products/{id}"]["get"]


def test_token_from_file_drops_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert Settings.from_env({"CATALOG_WRITE_TOKEN_FILE": str(path)}).write_token == TOKEN
    assert Settings.from_env({"CATALOG_WRITE_TOKEN": TOKEN}).write_token == TOKEN
    assert Settings.from_env({}).write_token is None


@pytest.mark.parametrize(("env", "message"), [
    ({"CATALOG_WRITE_TOKEN": "a", "CATALOG_WRITE_TOKEN_FILE": "/x"}, "not both"),
    ({"CATALOG_WRITE_TOKEN_FILE": "/nonexistent/token"}, "cannot read"),
    ({"CATALOG_WRITE_TOKEN": " padded"}, "printable"),
])
def test_bad_token_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Settings.from_env({"CATALOG_WRITE_TOKEN_FILE": str(path)})


def test_settings_repr_shows_no_secret() -> None:
    settings = Settings(database_url="postgresql+asyncpg://app:pw-db@h/d",
                        redis_url="redis://:pw-redis@h/0", write_token=TOKEN)
    text = repr(settings)
    assert "pw-db" not in text and "pw-redis" not in text and TOKEN not in text
