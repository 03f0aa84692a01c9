"""A real ophyd-async detector whose frames are chosen by the test.

The detector is ophyd-async's own :class:`ophyd_async.sim.SimBlobDetector`
(a :class:`ophyd_async.core.StandardDetector`) with ophyd-async's own trigger
and acquire logic, its own :class:`ophyd_async.core.StreamResourceDataProvider`
and therefore its own StreamResource / StreamDatum documents. Only two things
are replaced:

* the pattern generator (:class:`FramesPatternGenerator`) writes, for each
  exposure, the frame a test-supplied callable returns instead of a Gaussian
  blob, into ``/entry/data/data`` of an HDF5 file laid out exactly as
  ophyd-async's ``PatternFile`` lays it out (``libver="latest"``, one chunk
  per frame, ``/entry/sum`` holding each frame's int64 sum, SWMR mode switched
  on once the datasets exist);
* the data logic (:class:`FramesDataLogic`) announces the frames' shape and
  dtype in the StreamResource / data keys, where ophyd-async's
  ``BlobDataLogic`` hard-codes 240 x 320 and uint8.

The pattern generator sleeps until each frame's deadline (``period`` seconds
apart, 0.2 s by default) through its injectable ``sleep``; the factory
:func:`make_sim_detector` injects :func:`yield_to_event_loop` so that tests do
not wait.

Notes
-----
``ophyd_async.sim`` exports ``SimBlobDetector`` and ``PatternGenerator`` only;
``PatternFile``, ``BlobDataLogic``, ``BlobTriggerLogic`` and
``BlobAcquireLogic`` are imported from its private modules (checked against
ophyd-async 0.21.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePath

import h5py
import numpy as np
from bluesky.run_engine import call_in_bluesky_event_loop
from numpy.typing import DTypeLike
from ophyd_async.core import (
    AutoIncrementFilenameProvider,
    PathProvider,
    SignalR,
    StandardDetector,
    StaticPathProvider,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
)
from ophyd_async.sim import PatternGenerator, SimBlobDetector
from ophyd_async.sim._blob_acquire_logic import BlobAcquireLogic
from ophyd_async.sim._blob_data_logic import BlobDataLogic
from ophyd_async.sim._blob_trigger_logic import BlobTriggerLogic
from ophyd_async.sim._pattern_generator import DATA_PATH, SUM_PATH, PatternFile

__all__ = [
    "FrameSource",
    "FramesBlobDetector",
    "FramesDataLogic",
    "FramesPatternFile",
    "FramesPatternGenerator",
    "make_sim_detector",
    "yield_to_event_loop",
]

FrameSource = Callable[[], np.ndarray]
"""Returns the next frame, a 2-D array, each time the detector exposes."""

Sleep = Callable[[float], Awaitable[None]]


async def yield_to_event_loop(seconds: float) -> None:
    """Replace the pattern generator's inter-frame sleep: don't wait at all.

    Parameters
    ----------
    seconds : float
        Time the pattern generator would have slept until the frame's deadline
        (ignored).
    """
    await asyncio.sleep(0)


class FramesPatternFile(PatternFile):
    """ophyd-async's pattern file, written with frames from a callable.

    The file layout is ``PatternFile``'s: ``/entry/data/data`` (here with the
    frames' shape and dtype instead of 240 x 320 uint8, one chunk per frame),
    ``/entry/sum`` (int64 sum of each frame, chunks of 1024), ``libver="latest"``
    and SWMR mode switched on once both datasets exist.

    Parameters
    ----------
    path : PurePath
        HDF5 file to create (truncated if it exists).
    frames : FrameSource
        Called once per exposure; must return an array of ``shape`` whose dtype
        casts safely to ``dtype``.
    shape : tuple of int
        ``(height, width)`` of every frame.
    dtype : numpy.dtype
        Dtype of ``/entry/data/data``.
    """

    # ``PatternFile.__init__`` is deliberately not called: it creates a
    # 240 x 320 uint8 dataset, and no dataset can be added once SWMR is on.
    def __init__(  # noqa: D107
        self,
        path: PurePath,
        frames: FrameSource,
        shape: tuple[int, int],
        dtype: np.dtype,
    ) -> None:
        self.frames = frames
        self.shape = shape
        self.file = h5py.File(path, "w", libver="latest")
        self.data = self.file.create_dataset(
            name=DATA_PATH,
            shape=(0, *shape),
            dtype=dtype,
            maxshape=(None, *shape),
            chunks=(1, *shape),
        )
        self.sum = self.file.create_dataset(
            name=SUM_PATH,
            shape=(0,),
            dtype=np.int64,
            maxshape=(None,),
            chunks=(1024,),
        )
        self.file.swmr_mode = True
        self.image_counter = 0

    def next_frame(self) -> np.ndarray:
        """Call the frame source and check what it returned.

        Returns
        -------
        numpy.ndarray
            The frame, unchanged.

        Raises
        ------
        ValueError
            If the frame's shape is not the file's frame shape.
        TypeError
            If the frame's dtype does not cast safely to the dataset's dtype.
        """
        frame = np.asarray(self.frames())
        if frame.shape != self.shape:
            raise ValueError(f"frame source returned shape {frame.shape}, the detector writes {self.shape}")
        if not np.can_cast(frame.dtype, self.data.dtype, "safe"):
            raise TypeError(f"frame source returned {frame.dtype}, which does not cast safely to {self.data.dtype}")
        return frame

    def write_image_to_file(self, intensity: float) -> None:
        """Append the next frame and its sum, flushing both (as ``PatternFile`` does).

        Parameters
        ----------
        intensity : float
            The pattern generator's simulated intensity (ignored: the frame
            source decides the frame).
        """
        frame = self.next_frame()
        for dset, value in ((self.data, frame), (self.sum, np.sum(frame, dtype=np.int64))):
            dset.resize(self.image_counter + 1, axis=0)
            dset[self.image_counter] = value
            dset.flush()
        self.image_counter += 1


class FramesPatternGenerator(PatternGenerator):
    """ophyd-async's pattern generator, whose files hold frames from a callable.

    Timing, the ``images_written`` signal and the acquisition parameters are
    ``PatternGenerator``'s own; only the file differs.

    Parameters
    ----------
    frames : FrameSource
        Called once per exposure for the next frame.
    shape : tuple of int
        ``(height, width)`` of every frame.
    dtype : numpy.typing.DTypeLike, optional
        Dtype of the frames in the file, int32 by default.
    sleep : callable, optional
        Awaited with the seconds left until each frame's deadline;
        ``asyncio.sleep`` for real timing, :func:`yield_to_event_loop` to not
        wait.
    """

    def __init__(
        self,
        frames: FrameSource,
        shape: tuple[int, int],
        dtype: DTypeLike = np.int32,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(sleep=sleep)
        if len(shape) != 2:
            raise ValueError(f"frames are 2-D, got shape {shape}")
        self.frames = frames
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)

    def open_file(self, path: PurePath, width: int, height: int) -> None:
        """Create the file the next frames go to.

        Parameters
        ----------
        path : PurePath
            HDF5 file to create.
        width, height : int
            Frame size the data logic announced; must be this generator's.

        Raises
        ------
        ValueError
            If ``(height, width)`` is not ``self.shape`` (e.g. ophyd-async's own
            ``BlobDataLogic``, which announces 240 x 320, is in use).
        """
        if (height, width) != self.shape:
            raise ValueError(f"data logic announces {(height, width)}, the frames are {self.shape}")
        self._file = FramesPatternFile(path, self.frames, self.shape, self.dtype)
        self._update_images_written(0)


class FramesDataLogic(BlobDataLogic):
    """``BlobDataLogic`` announcing the pattern generator's frame shape and dtype.

    Same file name, uri, datasets, data keys (``<det>`` for the frames,
    ``<det>-sum`` for the sums), chunk shapes and provider as ophyd-async's
    ``BlobDataLogic.prepare_unbounded``; only the frame shape and dtype come
    from the :class:`FramesPatternGenerator` instead of 240 x 320 uint8.

    Parameters
    ----------
    path_provider : PathProvider
        Where to write each file.
    pattern_generator : FramesPatternGenerator
        The generator whose frames are written.
    """

    def __init__(self, path_provider: PathProvider, pattern_generator: FramesPatternGenerator) -> None:  # noqa: D107
        super().__init__(path_provider=path_provider, pattern_generator=pattern_generator)
        self.pattern_generator: FramesPatternGenerator = pattern_generator

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        """Open a new file and describe its two datasets.

        Parameters
        ----------
        datakey_name : str
            Data key of the frames (the detector's name).

        Returns
        -------
        StreamableDataProvider
            ophyd-async's ``StreamResourceDataProvider`` for the file.
        """
        path_info = self.path_provider(datakey_name)
        write_path = path_info.directory_path / f"{path_info.filename}.h5"
        height, width = self.pattern_generator.shape
        self.pattern_generator.open_file(write_path, width, height)
        data_resource = StreamResourceInfo(
            data_key=datakey_name,
            shape=(height, width),
            chunk_shape=(1, height, width),
            dtype_numpy=self.pattern_generator.dtype.str,
            parameters={"dataset": DATA_PATH},
        )
        sum_resource = StreamResourceInfo(
            data_key=f"{datakey_name}-sum",
            shape=(),
            chunk_shape=(1024,),
            dtype_numpy=np.dtype(np.int64).str,
            parameters={"dataset": SUM_PATH},
        )
        return StreamResourceDataProvider(
            uri=f"{path_info.directory_uri}{path_info.filename}.h5",
            resources=[data_resource, sum_resource],
            mimetype="application/x-hdf5",
            collections_written_signal=self.pattern_generator.images_written,
        )


class FramesBlobDetector(SimBlobDetector):
    """``SimBlobDetector`` with :class:`FramesDataLogic` instead of ``BlobDataLogic``.

    Builds what ``SimBlobDetector.__init__`` builds (ophyd-async's
    ``BlobTriggerLogic`` and ``BlobAcquireLogic`` on the same pattern
    generator, the config signals, ``StandardDetector.__init__``) but with the
    data logic that follows the frames.

    Parameters
    ----------
    path_provider : PathProvider
        Where to write each file.
    pattern_generator : FramesPatternGenerator
        Source of the frames.
    config_sigs : sequence of SignalR, optional
        Signals for ``read_configuration``; each appears under its own name.
    name : str, optional
        Device name, also the frames' data key.
    """

    def __init__(  # noqa: D107
        self,
        path_provider: PathProvider,
        pattern_generator: FramesPatternGenerator,
        config_sigs: Sequence[SignalR] = (),
        name: str = "",
    ) -> None:
        # SimBlobDetector.__init__ would add its own BlobDataLogic; skip it.
        self.pattern_generator = pattern_generator
        self.add_detector_logics(
            BlobTriggerLogic(pattern_generator=pattern_generator),
            BlobAcquireLogic(pattern_generator=pattern_generator),
            FramesDataLogic(path_provider=path_provider, pattern_generator=pattern_generator),
        )
        self.add_config_signals(*config_sigs)
        StandardDetector.__init__(self, name=name)


def make_sim_detector(
    name: str,
    frames: FrameSource,
    shape: tuple[int, int],
    directory: Path,
    *,
    dtype: DTypeLike = np.int32,
    config_sigs: Sequence[SignalR] = (),
    sleep: Sleep = yield_to_event_loop,
) -> SimBlobDetector:
    """Make a connected ophyd-async detector writing the given frames to HDF5.

    Each run (each ``prepare`` after ``stage``) writes a new file
    ``<directory>/<name>_00000.h5``, ``<name>_00001.h5``, ... so a later run
    never overwrites an earlier run's frames.

    Parameters
    ----------
    name : str
        Device name; the frames' data key is ``name``, the sums' ``name-sum``.
    frames : FrameSource
        Called once per exposure for the next frame, an array of ``shape``.
    shape : tuple of int
        ``(height, width)`` of every frame, e.g. ``(407, 487)``.
    directory : Path
        Existing absolute directory for the files.
    dtype : numpy.typing.DTypeLike, optional
        Dtype of the frames in the file, int32 by default.
    config_sigs : sequence of SignalR, optional
        Signals for ``read_configuration``, e.g.
        ``soft_signal_rw(str, initial_value="Pilatus", name=f"{name}-model")``.
        They keep their own names (they are not children of the detector), so
        each needs a non-empty name without ``.`` or ``/`` (the event-model
        schema rejects others).
    sleep : callable, optional
        Awaited between frames with the seconds left until the frame's deadline;
        the default does not wait, ``asyncio.sleep`` gives real timing.

    Returns
    -------
    SimBlobDetector
        A :class:`FramesBlobDetector`, connected on the bluesky event loop.

    Raises
    ------
    ValueError
        If a config signal's name is not a valid data key.
    RuntimeError
        If no RunEngine (hence no bluesky event loop) exists yet.

    Notes
    -----
    Make the RunEngine first: the detector and the signals are connected on
    the event loop of the most recently created RunEngine, through
    ``bluesky.run_engine.call_in_bluesky_event_loop``.
    """
    for sig in config_sigs:
        if not sig.name or "." in sig.name or "/" in sig.name:
            raise ValueError(f"config signal {sig!r} needs a name without '.' or '/', got {sig.name!r}")
    path_provider = StaticPathProvider(AutoIncrementFilenameProvider(base_filename=name), Path(directory).resolve())
    generator = FramesPatternGenerator(frames, shape, dtype=dtype, sleep=sleep)
    det = FramesBlobDetector(path_provider, generator, config_sigs=config_sigs, name=name)

    async def connect() -> None:
        await asyncio.gather(det.connect(mock=False), *(sig.connect(mock=False) for sig in config_sigs))

    call_in_bluesky_event_loop(connect())
    return det
