"""Whole derived runs written in one request: a bulk write endpoint of the served
catalog (``xrd-bluesky serve``) and its client.

The endpoint (:func:`bulk_write_router`, mounted through the ``include_routers`` of
:func:`tiled.server.app.build_app`) takes a whole run's documents as spool lines
(:mod:`.spool`, one JSON document a line) and writes them into a container of the
catalog with bluesky-tiled-plugins' ``TiledWriter`` (as :func:`whole_run_writer`
does on the client), inside the server: the writer's calls go to the catalog's
adapters directly (:class:`~xrd_bluesky.compat.tiled.CatalogWriteNode`), with the
steps of the endpoints its requests would reach, so that the nodes and the data are
those the client-side path writes, without an HTTP request for each. The request
needs the API key with the scopes of those requests (Tiled's own check); the server
(``xrd-bluesky serve``) has one user and no access policy. It takes runs whose data
are all in their events (derived runs): a run with external data (resources, stream
resources) or ragged arrays is refused (422) and stays in the caller's spool.

The client (:func:`bulk_write_url`, :func:`post_run`) asks once whether the server
offers the endpoint; a stock Tiled server does not (404), and the caller falls back to
writing the run node by node.

The writes through the catalog's adapters and the writer of whole runs reach into
Tiled and bluesky-tiled-plugins beyond their public APIs through
:mod:`xrd_bluesky.compat.tiled` and :mod:`xrd_bluesky.compat.bluesky_tiled_plugins`,
which check the installed releases.
"""

import httpx

from ..compat.bluesky_tiled_plugins import WholeRunTiledWriter
from ..compat.tiled import CatalogWriteNode
from ..errors import XRDBlueskyError

#: The endpoint, under ``/api/v1``: GET answers what it is, POST ``<route>/<container path>`` writes a run.
ROUTE = "/xrd-bluesky/bulk-write"
#: The protocol the endpoint speaks (its GET answers it); a client speaking another one falls back.
PROTOCOL = "xrd-bluesky-bulk-write/1"


class BulkWriteError(XRDBlueskyError):
    """The server refused or failed a bulk write (the status and its reason in the message)."""


# -- the writer of whole runs (both sides) ------------------------------------------
#: Events per write of a run written whole (all of them at its stop).
WHOLE_RUN_BATCH_SIZE = 2**62


def whole_run_writer(container) -> WholeRunTiledWriter:
    """The writer of runs written whole, at their stop (derived runs): as
    :func:`.writer.tiled_writer` with every event of a stream in one write, the same
    nodes and content, but the run's stream tree is closed (for Tiled's live
    subscribers) by one request, the run's, not by one per stream, table and array,
    since none of them was written before the run's end (see
    :class:`~xrd_bluesky.compat.bluesky_tiled_plugins.WholeRunTiledWriter`). The client
    uses it for a stock Tiled server, the bulk write endpoint inside the server.
    """
    return WholeRunTiledWriter(container, batch_size=WHOLE_RUN_BATCH_SIZE, max_array_size=0)


# -- the client's side -------------------------------------------------------------
def bulk_write_url(container) -> str | None:
    """Where runs into ``container`` (a Tiled container client) are written in one
    request, or None if its server does not offer the endpoint (a stock Tiled server).

    Raises
    ------
    httpx.HTTPError
        The server did not answer (the caller treats it as any failed upload).
    """
    context = container.context
    response = context.http_client.get(f"{context.api_uri}{ROUTE.lstrip('/')}")
    if not response.is_success:  # a stock Tiled server: 404
        return None
    if response.headers.get("content-type", "").split(";")[0] != "application/json" or \
            response.json().get("protocol") != PROTOCOL:
        return None
    return f"{context.api_uri}{ROUTE.lstrip('/')}/{'/'.join(container.path_parts)}"


def post_run(container, url: str, lines: bytes) -> None:
    """Write a whole run (its spool ``lines``, start to stop, as the spool file holds
    them) into ``container`` by one request to ``url`` (:func:`bulk_write_url`).

    Raises
    ------
    BulkWriteError
        The server refused or failed the write: nothing of the run may be stored, or part.
    httpx.HTTPError
        The request did not complete.
    """
    response = container.context.http_client.post(url, content=lines,
                                                   headers={"content-type": "application/x-ndjson"})
    if not response.is_success:
        raise BulkWriteError(f"bulk write to {url} answered {response.status_code}: {_reason(response)}")


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


# -- the server's side -------------------------------------------------------------
#: Documents of data outside the events, which the bulk write does not take.
EXTERNAL_DATA_DOCUMENTS = frozenset({"resource", "datum", "datum_page", "stream_resource", "stream_datum"})


def bulk_write_router(tree):
    """The FastAPI router of the endpoint (see the module docstring), for
    ``include_routers`` of :func:`tiled.server.app.build_app`, writing into ``tree``
    (the served catalog's root adapter, as ``build_app`` gets it)."""
    import asyncio

    from fastapi import APIRouter, HTTPException, Request, Security
    from tiled.server.authentication import check_scopes

    router = APIRouter()

    @router.get(ROUTE)
    async def about(_=Security(check_scopes, scopes=["read:metadata"])) -> dict:
        return {"protocol": PROTOCOL}

    @router.post(ROUTE + "/{path:path}")
    async def write_run(path: str, request: Request,
                        _=Security(check_scopes, scopes=["create:node", "write:metadata", "write:data"])) -> dict:
        # the writer runs in a thread of the event loop's executor; the adapters'
        # coroutines it calls run on the event loop
        loop = asyncio.get_running_loop()
        lines = await request.body()
        try:
            return await loop.run_in_executor(None, _write_run, tree, loop, path, lines)
        except BulkWriteError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except Exception as exc:  # the caller keeps the run in its spool; tell it why
            raise HTTPException(status_code=500, detail=f"{type(exc).__name__}: {exc}") from None

    return router


def _write_run(tree, loop, path: str, lines: bytes) -> dict:
    """Write the run in spool ``lines`` into the container at ``path`` of the catalog
    ``tree`` (its adapters' coroutines run on ``loop``); what was written.

    Raises
    ------
    BulkWriteError
        ``lines`` are not a whole run's spool lines (start first, stop last), the run
        has data outside its events, or nothing is at ``path``.
    """
    from .spool import decode

    try:
        documents = [decode(line) for line in lines.splitlines() if line.strip()]
    except ValueError as exc:
        raise BulkWriteError(f"not spool lines: {exc}") from None
    if not documents or documents[0][0] != "start" or documents[-1][0] != "stop":
        raise BulkWriteError("a bulk write takes a whole run: its start first, its stop last")
    _check_internal(documents)
    try:
        container = CatalogWriteNode.at(tree, loop, path)
    except KeyError as exc:
        raise BulkWriteError(str(exc)) from None
    writer = whole_run_writer(container)
    for name, doc in documents:
        writer(name, doc)
    container.commit()
    return {"uid": documents[0][1]["uid"], "documents": len(documents)}


def _check_internal(documents: list[tuple[str, dict]]) -> None:
    """Refuse a run with data outside its events or of ragged shape (which the writer
    through the catalog's adapters does not write)."""
    for name, doc in documents:
        if name in EXTERNAL_DATA_DOCUMENTS:
            raise BulkWriteError(f"a bulk write takes runs whose data are in their events, not a {name} document")
        if name == "descriptor":
            ragged = [key for key, data_key in doc.get("data_keys", {}).items() if None in data_key.get("shape", ())]
            if ragged:
                raise BulkWriteError(f"a bulk write takes no ragged arrays (data keys {ragged} of stream "
                                     f"{doc.get('name')!r} have a dimension of no fixed length)")
