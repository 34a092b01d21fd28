"""Settings that touch the disk (issue 11 item 8): the development secrets and the SQLite file
are created owner-only (0600) in an owner-only `var/` (0700)."""

from __future__ import annotations

import stat

from server.cli import migrate
from server.settings import Settings


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fresh(tmp_path) -> Settings:
    return Settings(HUB_VAR_DIR=tmp_path / "var", jwt_secret="", hub_encryption_keys="", database_url="")


class TestDevelopmentFiles:
    def test_jwt_secret_is_created_0600_in_a_0700_var(self, tmp_path):
        settings = fresh(tmp_path)

        secret = settings.signing_secret()

        assert len(secret) >= 32
        assert mode(settings.var_dir / "jwt_secret") == 0o600
        assert mode(settings.var_dir) == 0o700

    def test_encryption_key_is_created_0600(self, tmp_path):
        settings = fresh(tmp_path)

        settings.encryption_keys()

        assert mode(settings.var_dir / "encryption_key") == 0o600
        assert mode(settings.var_dir) == 0o700

    def test_the_secrets_survive_a_restart(self, tmp_path):
        first, second = fresh(tmp_path), fresh(tmp_path)

        assert first.signing_secret() == second.signing_secret()
        assert first.encryption_keys() == second.encryption_keys()

    def test_the_sqlite_database_is_created_0600(self, tmp_path):
        settings = fresh(tmp_path)

        migrate(settings)

        assert settings.database_url == f"sqlite:///{settings.var_dir / 'hub.db'}"
        assert mode(settings.var_dir / "hub.db") == 0o600
        assert mode(settings.var_dir) == 0o700

    def test_a_database_outside_var_is_left_to_the_operator(self, tmp_path):
        elsewhere = tmp_path / "elsewhere.db"
        settings = Settings(HUB_VAR_DIR=tmp_path / "var", database_url=f"sqlite:///{elsewhere}")

        settings.prepare_var_dir()

        assert not elsewhere.exists()
