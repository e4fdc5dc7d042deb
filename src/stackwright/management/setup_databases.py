"""`stackwright-setup-databases`: create or upgrade the schema and the root admin, idempotently.

Writes the admin's API credentials as a cloudstack.ini (mode 0600) that the `cs` client and
other CloudStack tools read: `CLOUDSTACK_CONFIG=PATH cs listZones` works at once.
"""

from __future__ import annotations

import argparse
import configparser
import io
import logging
import os
import sys

from .. import properties
from .persistence import crypto
from .persistence.db import Database, redact_url
from .persistence.models import Base
from .services import catalog
from .services.accounts import AccountService
from .services.configuration import seal_stored_secrets

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="stackwright-setup-databases",
        description="Create or upgrade the Stackwright database and its root admin account.",
    )
    ap.add_argument("--db-url", required=True,
                    help="sqlite:////path/cloud.db or mysql+pymysql://user:password@host:port/db")
    ap.add_argument("--credentials-file", required=True,
                    help="where to write the admin's cloudstack.ini (mode 0600)")
    ap.add_argument("--endpoint", default="http://127.0.0.1:8080/client/api",
                    help="API endpoint written into the credentials file")
    ap.add_argument("--admin-password-file",
                    help="file holding the admin user's password (for session login); "
                         "without it the admin gets a random password")
    ap.add_argument("--key-file",
                    help="the key that encrypts stored credentials, created (mode 0600) when missing and "
                         f"kept afterwards (default next to an SQLite database, else {crypto.DEFAULT_KEY_FILE})")
    ap.add_argument("--rotate-keys", action="store_true",
                    help="issue a new API key/secret for admin even if it has one")
    ap.add_argument("--region", default="cloudstack", help="section name in the ini file")
    return ap


# Columns holding credentials, encrypted at rest: those the models type Encrypted.
ENCRYPTED_COLUMNS = tuple((t.name, c.name) for t in Base.metadata.sorted_tables
                          for c in t.columns if isinstance(c.type, crypto.Encrypted))


def render_ini(region: str, endpoint: str, key: str, secret: str) -> str:
    cp = configparser.ConfigParser(interpolation=None)
    cp[region] = {"endpoint": endpoint, "key": key, "secret": secret}
    buf = io.StringIO()
    cp.write(buf)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parser().parse_args(argv)
    password = None
    if args.admin_password_file:
        try:
            with open(args.admin_password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as e:
            print(f"cannot read the admin password file: {e}", file=sys.stderr)
            return 2
    key_file = args.key_file or crypto.default_key_file(args.db_url)
    db = Database(args.db_url)
    try:
        before = db.current_revision() if db.has_schema() else None
        db.upgrade()
        after = db.current_revision()
        try:
            key, key_created = crypto.ensure_key(key_file)
        except (OSError, crypto.KeyFileError) as e:
            print(f"cannot set up the key file {key_file}: {getattr(e, 'strerror', None) or e}",
                  file=sys.stderr)
            return 2
        crypto.install(key)
        with db.engine.begin() as conn:
            # A database written before encryption at rest: its credentials, encrypted in place.
            encrypted = sum(crypto.encrypt_in_place(conn, table, column) for table, column in ENCRYPTED_COLUMNS)
        with db.transaction() as s:
            encrypted += seal_stored_secrets(s)     # secret settings (alert.smtp.password, ...)
        with db.transaction() as s:
            svc = AccountService(s)
            admin = svc.ensure_root(admin_password=password)
            catalog.seed(s)
            if args.rotate_keys:
                svc.register_keys(admin)
            key, secret = admin.api_key, admin.secret_key
    except Exception as e:
        print(f"cannot set up the database at {redact_url(args.db_url)}: {str(e).splitlines()[0]}",
              file=sys.stderr)
        return 1
    finally:
        db.dispose()
    if db.is_sqlite:
        # The database holds API secrets: keep it (and its WAL files) owner-only.
        path = args.db_url.split(":///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, 0o600)
    text = render_ini(args.region, args.endpoint, key, secret)
    existing = None
    if os.path.exists(args.credentials_file):
        with open(args.credentials_file, encoding="utf-8") as f:
            existing = f.read()
    if existing != text:
        properties.write_atomic(args.credentials_file, text, mode=0o600)
        wrote = "written"
    else:
        os.chmod(args.credentials_file, 0o600)
        wrote = "unchanged"
    print(f"key file {'created' if key_created else 'kept'}: {key_file}")
    if encrypted:
        print(f"stored credentials encrypted in place: {encrypted}")
    if before == after:
        print(f"schema at revision {after} (unchanged); credentials {wrote}: {args.credentials_file}")
    else:
        print(f"schema upgraded {before or 'empty'} -> {after}; credentials {wrote}: {args.credentials_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
