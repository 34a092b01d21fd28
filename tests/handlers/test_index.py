"""`GET /` and `GET /api/v1/` point a person to the docs, the contract and health (handlers/index.py,
issue 11 item 15)."""

from __future__ import annotations

import pytest

INDEX = {
    "name": "Integration Hub",
    "links": {
        "docs": "/api/v1/ui/",
        "contract": "/api/v1/openapi.json",
        "probesContract": "/openapi.json",
        "health": "/health",
        "api": "/api/v1",
    },
}


@pytest.mark.parametrize("path", ["/", "/api/v1/", "/api/v1"])
def test_the_index_links_docs_contract_and_health(client, path):
    response = client.get(path, follow_redirects=True)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert {key: body[key] for key in ("name", "links")} == INDEX
    assert body["version"] == client.get("/api/v1/openapi.json").json()["info"]["version"]


def test_every_link_of_the_index_answers(client):
    for link in INDEX["links"].values():
        assert client.get(link, follow_redirects=True).status_code == 200, link
