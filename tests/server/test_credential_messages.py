"""401 answers word what was wrong with the credentials sent (issue 11 item 18)."""

from __future__ import annotations

import pytest

from tests.assertions import assert_error

ME = "/api/v1/auth/me"


class TestMissingCredentials:
    def test_no_credentials_at_all(self, client):
        assert_error(client.get(ME), 401, "NO_TOKEN", message="Authorization header missing or not a Bearer token")

    @pytest.mark.parametrize("value", ["", "   "])
    def test_an_empty_api_key_header_says_so(self, client, value):
        response = client.get(ME, headers={"X-API-Key": value})

        assert_error(response, 401, "NO_TOKEN", message="X-API-Key header is empty")

    def test_another_authorization_scheme_says_so(self, client):
        response = client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"})

        assert_error(response, 401, "NO_TOKEN", message="Authorization header is not a Bearer token")
