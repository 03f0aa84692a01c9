"""Every use of another library's private (or undocumented) internals, one module per
library, each checked against the releases it was written for.

Importing a module of this package checks the installed release of its library
(:class:`~xrd_bluesky.compat.releases.ReleaseRange`) and fails loudly, naming the
library, the installed release and the internals to check, on a release outside the
tested range; ``pyproject.toml`` bounds the same library to the same range. The rest
of the package calls the hooks here and never touches those internals itself.

Modules: :mod:`.tiled` (the table storage's connection pool, the SQL table adapter,
a whole run written into the catalog in one transaction), :mod:`.bluesky` (``RemoteDispatcher``'s receive
loop), :mod:`.pyfai` (the CSR integration engine's matrix, the geometry refinement's
control points and garbage collection, the goniometer file's versions and detector),
:mod:`.bluesky_tiled_plugins` (``TiledWriter``'s run writer).

This is a bottom layer: it imports third-party libraries and :mod:`xrd_bluesky.errors`
only.
"""
