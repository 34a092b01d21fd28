def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "up"}


def test_register_login(client, tenant_admin, member):
    response = client.get("/api/v1/auth/me", headers=member.headers)
    assert response.status_code == 200
    assert response.json()["tenantId"] == tenant_admin.tenant_id
