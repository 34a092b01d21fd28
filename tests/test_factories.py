"""The test factories themselves: a session-long account outlives its 15-minute access token."""

from __future__ import annotations


def test_the_session_super_admin_signs_in_again_once_its_token_nears_expiry(client, super_admin):
    before = super_admin.access_token
    super_admin.expires_at = 0.0  # as if the session had run past the token's lifetime
    renewed = super_admin.access_token
    assert renewed != before
    response = client.get("/api/v1/auth/me", headers=super_admin.headers)
    assert response.status_code == 200 and response.json()["role"] == "super_admin"
