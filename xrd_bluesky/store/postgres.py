"""PostgreSQL for a served catalog (``xrd-bluesky serve --database postgresql://...``).

Tiled keeps two things in SQL: its catalog (nodes, metadata, data sources; SQLAlchemy
over ``asyncpg``) and the rows of tables, the event streams of the runs (through ADBC,
``adbc_driver_postgresql``). Both go to the one database the user names: Tiled's data
tables are ``table_<md5 of their Arrow schema>`` plus a sequence
``_dataset_id_counter``, beside the catalog's fixed table names (``nodes``,
``data_sources``, ``assets``...), so nothing collides; the catalog database is not one
of Tiled's registered storages (those are keyed by database name only), so sharing it
is no ambiguity either; and one database means one backup, one set of credentials and
no CREATEDB privilege. The user's role needs CREATE on the database's ``public``
schema (the owner has it) and, on a database new to Tiled, may create the trusted
extension ``btree_gin``.

:func:`tiled_uris` turns the user's URI (``postgresql://user@host:port/db``, or with
``postgres://`` or an explicit SQLAlchemy driver such as ``postgresql+asyncpg://``)
into the two URIs Tiled wants; :func:`check_database` fails early, naming the database,
when it cannot be reached; :func:`tiled_adapters` reads event tables in event order
(see :func:`xrd_bluesky.compat.tiled.event_ordered_sql_adapter`). A throw-away cluster
for tests and benchmarks is :class:`xrd_bluesky_bench.testing.TemporaryPostgres`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tiled.mimetypes import TILED_SQL_TABLE_MIMETYPE

from ..compat.tiled import event_ordered_sql_adapter
from ..errors import XRDBlueskyError
from .catalog import CatalogUnavailableError

#: How long (s) :func:`check_database` waits for a connection.
CONNECT_TIMEOUT_S = 10
_SCHEMES = ("postgres", "postgresql")


class PostgresError(XRDBlueskyError, RuntimeError):
    """A PostgreSQL cluster could not be set up, started or stopped, or Tiled could not
    set its catalog up in a PostgreSQL database."""


# -- the user's URI, as Tiled wants it ------------------------------------------------
def is_postgres_uri(uri: str | None) -> bool:
    """Whether ``uri`` names a PostgreSQL database (``postgres(ql)[+driver]://...``)."""
    if not uri or "://" not in uri:
        return False
    return uri.split("://", 1)[0].split("+", 1)[0].lower() in _SCHEMES


@dataclass(frozen=True)
class TiledURIs:
    """Where Tiled keeps a served catalog in PostgreSQL.

    Attributes
    ----------
    catalog : str
        SQLAlchemy URI of the catalog database (``postgresql+asyncpg://...`` unless the
        user named another async driver).
    tables : str
        ``postgresql://...`` URI of the same database for Tiled's tabular storage
        (ADBC, libpq syntax): where the event streams' rows go.
    """

    catalog: str
    tables: str


def tiled_uris(uri: str) -> TiledURIs:
    """The catalog and table-storage URIs of the PostgreSQL database ``uri``.

    Parameters
    ----------
    uri : str
        ``postgresql://[user[:password]@]host[:port]/database[?params]``; the scheme
        may also be ``postgres`` or carry a SQLAlchemy driver (``postgresql+asyncpg``).
        Credentials stay in memory: Tiled stores table locations without them. Query
        parameters go to both drivers as they are (libpq's ``sslmode`` is renamed
        ``ssl`` for asyncpg), so use those both understand (``host``, ``sslmode``).

    Raises
    ------
    CatalogUnavailableError
        ``uri`` is not a PostgreSQL URI or names no database.
    """
    if not is_postgres_uri(uri):
        raise CatalogUnavailableError(f"{redact(uri)} is not a PostgreSQL URI (postgresql://user@host:port/database)")
    parts = urlsplit(uri)
    driver = parts.scheme.partition("+")[2]
    database = parts.path.lstrip("/") or dict(parse_qsl(parts.query)).get("dbname", "")
    if not database:
        raise CatalogUnavailableError(f"{redact(uri)} names no database (postgresql://user@host:port/database)")
    catalog = parts._replace(scheme=f"postgresql+{driver or 'asyncpg'}")
    if not driver or driver == "asyncpg":  # asyncpg names libpq's sslmode ssl (same values)
        catalog = catalog._replace(query=urlencode([("ssl" if k == "sslmode" else k, v)
                                                    for k, v in parse_qsl(parts.query)], safe="/"))
    return TiledURIs(catalog=urlunsplit(catalog), tables=urlunsplit(parts._replace(scheme="postgresql")))


def redact(uri: str) -> str:
    """``uri`` without its password (for messages and logs); anything else unchanged."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
    except ValueError:  # not a URI
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_database(uri: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Connect once to the PostgreSQL database ``uri`` as Tiled's table storage will.

    Raises
    ------
    CatalogUnavailableError
        The server does not answer within ``timeout_s`` (s), refuses the credentials,
        or has no such database; the message names the database (never the password)
        and the server's reason.
    """
    import adbc_driver_postgresql.dbapi

    tables = tiled_uris(uri).tables
    parts = urlsplit(tables)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", str(max(1, round(timeout_s))))
    try:
        with adbc_driver_postgresql.dbapi.connect(urlunsplit(parts._replace(query=urlencode(query, safe="/")))) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
    except Exception as exc:  # the driver's errors carry libpq's message
        reason = str(exc).replace(parts.password or "\0", "***").strip().splitlines()
        raise CatalogUnavailableError(f"cannot use PostgreSQL database {redact(tables)} for the catalog: "
                                      f"{' '.join(line.strip() for line in reason)}") from None


def tiled_adapters() -> dict:
    """Tiled's ``adapters_by_mimetype`` for a catalog whose tables are in PostgreSQL (SQL
    tables read in event order: :func:`~xrd_bluesky.compat.tiled.event_ordered_sql_adapter`)."""
    return {TILED_SQL_TABLE_MIMETYPE: event_ordered_sql_adapter()}
