"""A test double of an ophyd v1 EPICS area detector, built from ophyd's own classes.

Beamline profiles define their area detectors from ophyd v1 classes: a ``SingleTrigger``
mixin, a vendor detector class, a vendor cam and an HDF5 file plugin that carries
ophyd's FileStore mixins. This module builds exactly such a class,
:class:`PilatusDetector`, and instantiates it through :func:`ophyd.sim.make_fake_device`,
so every EPICS signal is an :class:`ophyd.sim.FakeEpicsSignal` and no IOC is needed.

:func:`make_fake_pilatus` plays the part of the IOC. It seeds the fake signals that
ophyd's stage, trigger and FileStore logic read or wait on, and it installs "put
handlers" (``FakeEpicsSignal.sim_set_putter``) on the few PVs whose writes have side
effects in a real areaDetector IOC:

``HDF1:FilePath``
    Checks that the directory exists (creating the last ``CreateDirectory`` levels
    when that PV is negative, as ADCore does) and sets ``FilePathExists_RBV``.
``HDF1:Capture``
    In ``Stream`` mode, starting a capture opens the file
    ``FileTemplate % (FilePath, FileName, FileNumber)`` and, with ``AutoIncrement``,
    increments ``FileNumber``: this is why ophyd names the file with
    ``file_number - 1`` after staging.
``cam1:Acquire``
    Putting 1 acquires ``NumImages`` frames, each one from ``frames()``, hands them to
    the HDF5 plugin (appended along axis 0 of ``/entry/data/data``), updates the array
    counters and ``ArraySize`` readbacks, then puts ``Acquire`` back to 0, the falling
    edge ``SingleTrigger`` waits for.

The 1 -> 0 edge must not come before ``SingleTrigger.trigger`` has returned its status:
that method puts ``Acquire`` and only then returns ``self._status``, which the falling
edge resets to ``None`` (a real IOC is never that fast). So the device's ``trigger`` is
wrapped on the instance: it calls ophyd's ``trigger`` unchanged (the frames are written
during its ``Acquire`` put), then puts ``Acquire`` back to 0, which finishes the status.
A put of 1 outside ``trigger`` (``hdf5.warmup()``, a test) completes at once.

Everything else (the stage signals, the file name, the resource and datum documents,
the trigger status) is ophyd's own code. The HDF5 file therefore holds one block of
``NumImages`` frames per trigger, the layout
:class:`area_detector_handlers.handlers.AreaDetectorHDF5Handler` reads with
``frame_per_point`` and ``point_number``.

Two deliberate differences from a real IOC: acquisition is synchronous (the trigger
status is already finished when ``trigger()`` returns), and the HDF5 file is closed
after every acquisition, so it can be read while the run is still going (a real
plugin in ``Stream`` mode keeps it open until the capture stops, unless SWMR is on).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ophyd import Component as Cpt
from ophyd.areadetector import detectors
from ophyd.areadetector.cam import PilatusDetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin
from ophyd.areadetector.trigger_mixins import SingleTrigger
from ophyd.sim import make_fake_device

__all__ = [
    "HDF5_DATASET",
    "FakeAreaDetectorIOC",
    "HDF5PluginWithFileStore",
    "PilatusDetector",
    "make_fake_pilatus",
]

#: Dataset the areaDetector HDF5 plugin (default layout) writes frames to; the path
#: ``AreaDetectorHDF5Handler`` hard-codes.
HDF5_DATASET = "/entry/data/data"

# Enum strings of the PVs whose string form ophyd compares against when staging
# (``Signal.set(...).wait()`` compares "Stream" with the readback through them).
_PLUGIN_ENUMS: dict[str, tuple[str, ...]] = {
    "enable": ("Disable", "Enable"),
    "blocking_callbacks": ("No", "Yes"),
    "auto_increment": ("No", "Yes"),
    "auto_save": ("No", "Yes"),
    "file_write_mode": ("Single", "Capture", "Stream"),
    "capture": ("Done", "Capture"),
}
_CAM_ENUMS: dict[str, tuple[str, ...]] = {
    "acquire": ("Done", "Acquire"),
    "image_mode": ("Single", "Multiple", "Continuous"),
    "trigger_mode": ("Internal", "Ext. Enable", "Ext. Trigger", "Mult. Trigger", "Alignment"),
    "array_callbacks": ("Disable", "Enable"),
}


class HDF5PluginWithFileStore(HDF5Plugin, FileStoreHDF5IterativeWrite):
    """HDF5 file plugin that emits ``AD_HDF5`` resource and datum documents.

    The usual beamline-profile combination: ophyd's :class:`HDF5Plugin` PVs with the
    :class:`FileStoreHDF5IterativeWrite` mixin, which names the file at stage time,
    emits one resource (``resource_kwargs={"frame_per_point": ...}``) per stage and one
    datum (``datum_kwargs={"point_number": i}``) per trigger.
    """


class PilatusDetector(SingleTrigger, detectors.PilatusDetector):
    """A Pilatus area detector as beamline profiles define it (ophyd v1).

    The class-level path templates are placeholders of the kind a profile would use;
    :func:`make_fake_pilatus` points them at a test directory on the instance.
    ``hdf5`` is a read attribute (profiles write ``det.read_attrs = ["hdf5"]`` or
    ``det.hdf5.kind = "normal"``): ophyd's area detectors read nothing by default,
    and the image datum is read through the file plugin.
    """

    _default_read_attrs = ("hdf5",)

    cam = Cpt(PilatusDetectorCam, "cam1:")
    hdf5 = Cpt(
        HDF5PluginWithFileStore,
        "HDF1:",
        write_path_template="/nsls2/data/xrd/assets/pilatus/%Y/%m/%d/",
        read_path_template="/nsls2/data/xrd/assets/pilatus/%Y/%m/%d/",
        root="/nsls2/data/xrd/assets",
    )


class FakeAreaDetectorIOC:
    """The side effects a real areaDetector IOC has on a few PV writes.

    Installed on a fake :class:`PilatusDetector` by :func:`make_fake_pilatus`; see the
    module docstring for which PVs it serves.

    Parameters
    ----------
    det : PilatusDetector
        The fake device (its signals are :class:`ophyd.sim.FakeEpicsSignal`).
    frames : callable
        Called once per frame with no argument; returns one 2D array (rows, columns).

    Attributes
    ----------
    files_written : list of str
        Every HDF5 file opened by a capture, in order (absolute paths, as the IOC sees
        them).
    frames_written : list of numpy.ndarray
        Every frame written to a file, in order.
    create_directory : int
        IOC-side ``CreateDirectory`` value used when the ophyd plugin class has no
        ``create_directory`` component (ophyd's base ``HDF5Plugin`` has none): -3, as
        ophyd's newer plugin classes stage it and as beamline IOCs are usually set up.
    """

    def __init__(self, det: Any, frames: Callable[[], np.ndarray]) -> None:
        self.det = det
        self.frames = frames
        self.files_written: list[str] = []
        self.frames_written: list[np.ndarray] = []
        self.create_directory = -3
        self._capture_file: str | None = None
        self._lock = threading.RLock()
        self._in_trigger = False
        self._acquire_pending = False
        det.hdf5.file_path.sim_set_putter(self._put_file_path)
        det.hdf5.capture.sim_set_putter(self._put_capture)
        det.cam.acquire.sim_set_putter(self._put_acquire)
        self._ophyd_trigger = det.trigger
        det.trigger = self._trigger

    # -- device.trigger ------------------------------------------------------------
    def _trigger(self) -> Any:
        """Run ophyd's ``trigger``, then end the acquisition it started (1 -> 0)."""
        self._in_trigger = True
        try:
            status = self._ophyd_trigger()
        finally:
            self._in_trigger = False
            if self._acquire_pending:
                self._acquire_pending = False
                self.det.cam.acquire.sim_put(0)
        return status

    # -- HDF1:FilePath -------------------------------------------------------------
    def _put_file_path(self, value: str, *args: Any, **kwargs: Any) -> None:
        """Store the path; like ADCore, create missing levels and set FilePathExists."""
        hdf5 = self.det.hdf5
        path = str(value)
        if hasattr(hdf5, "create_directory"):  # plugin classes of ADCore >= 2.x
            depth = int(hdf5.create_directory.get())
        else:  # the PV exists on the IOC, ophyd's v1.9 HDF5Plugin just lacks it
            depth = self.create_directory
        if not os.path.isdir(path) and depth != 0:
            _create_file_path(path, depth)
        hdf5.file_path.sim_put(path)
        hdf5.file_path_exists.sim_put(int(os.path.isdir(path)))

    # -- HDF1:Capture --------------------------------------------------------------
    def _put_capture(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Start (open the file, bump FileNumber) or stop a Stream-mode capture."""
        hdf5 = self.det.hdf5
        start = int(value) == 1
        with self._lock:
            if start and hdf5.file_write_mode.get(as_string=True) == "Stream":
                file_number = int(hdf5.file_number.get())
                full_name = hdf5.file_template.get() % (
                    os.path.join(str(hdf5.file_path.get()), ""),
                    hdf5.file_name.get(),
                    file_number,
                )
                self._capture_file = full_name
                self.files_written.append(full_name)
                hdf5.full_file_name.sim_put(full_name)
                hdf5.num_captured.sim_put(0)
                if hdf5.auto_increment.get(as_string=True) == "Yes":
                    hdf5.file_number.sim_put(file_number + 1)
            elif not start:
                self._capture_file = None
            hdf5.capture.sim_put(1 if start else 0)

    # -- cam1:Acquire --------------------------------------------------------------
    def _put_acquire(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Acquire NumImages frames and pass them to the HDF5 plugin.

        Acquire goes back to 0 here, or, during ``trigger``, once ophyd's ``trigger``
        has returned (see :meth:`_trigger`).
        """
        cam = self.det.cam
        if int(value) != 1:
            cam.acquire.sim_put(0)
            return
        cam.acquire.sim_put(1)
        try:
            with self._lock:
                for _ in range(max(int(cam.num_images.get()), 1)):
                    self._acquire_one()
        except BaseException:
            cam.acquire.sim_put(0)
            raise
        if self._in_trigger:
            self._acquire_pending = True
        else:
            cam.acquire.sim_put(0)

    def _acquire_one(self) -> None:
        cam, hdf5 = self.det.cam, self.det.hdf5
        frame = np.asarray(self.frames())
        if frame.ndim != 2:
            raise ValueError(f"frames() must return a 2D array, got shape {frame.shape}")
        rows, cols = frame.shape
        cam.array_size.array_size_y.sim_put(rows)
        cam.array_size.array_size_x.sim_put(cols)
        cam.array_counter.sim_put(int(cam.array_counter.get()) + 1)
        if self._capture_file is None or int(hdf5.enable.get(as_string=False)) != 1:
            return  # the plugin drops the frame: not capturing, or disabled
        _append_frame(self._capture_file, frame)
        self.frames_written.append(frame.copy())
        hdf5.array_size.height.sim_put(rows)
        hdf5.array_size.width.sim_put(cols)
        hdf5.array_counter.sim_put(int(hdf5.array_counter.get()) + 1)
        hdf5.num_captured.sim_put(int(hdf5.num_captured.get()) + 1)


def _create_file_path(path: str, depth: int) -> None:
    """Create the directories of ``path`` the way ADCore's ``createFilePath`` does.

    A negative ``depth`` allows creating at most the last ``-depth`` levels; a positive
    one requires the first ``depth`` levels to exist already.
    """
    parts = Path(path).parts
    if depth < 0:
        must_exist = Path(*parts[: max(len(parts) + depth, 1)])
    else:
        must_exist = Path(*parts[: min(depth, len(parts))])
    if must_exist.is_dir():
        os.makedirs(path, exist_ok=True)


def _append_frame(filename: str, frame: np.ndarray) -> None:
    """Append one frame along axis 0 of ``/entry/data/data``, creating file and dataset."""
    with h5py.File(filename, "a") as f:
        if HDF5_DATASET not in f:
            f.create_dataset(
                HDF5_DATASET,
                shape=(0, *frame.shape),
                maxshape=(None, *frame.shape),
                chunks=(1, *frame.shape),
                dtype=frame.dtype,
            )
        dset = f[HDF5_DATASET]
        if dset.shape[1:] != frame.shape:
            raise ValueError(
                f"frame shape {frame.shape} differs from {dset.shape[1:]} already in {filename}"
            )
        dset.resize(dset.shape[0] + 1, axis=0)
        dset[-1] = frame


def make_fake_pilatus(
    name: str,
    frames: Callable[[], np.ndarray],
    write_dir: Path,
    model: str = "Pilatus",
    frames_per_point: int = 1,
    spec: str | None = None,
    *,
    acquire_time: float = 1.0,
    path_template: str = "%Y/%m/%d/",
    shape: tuple[int, int] = (619, 487),
) -> PilatusDetector:
    """Return a ready-to-use fake ophyd v1 Pilatus whose test-side IOC writes HDF5 files.

    The device is ``make_fake_device(PilatusDetector)`` with prefix
    ``"XF:28ID1-ES{Det:PIL}"``; staging, triggering, file naming and the resource /
    datum documents are ophyd's own. ``RE(count([det], num=n))`` completes without an
    IOC and emits one ``resource`` (spec ``"AD_HDF5"`` unless ``spec`` is given, root
    ``write_dir``, resource_kwargs ``{"frame_per_point": frames_per_point}``), one
    ``datum`` per event (datum_kwargs ``{"point_number": i}``) and events whose
    ``f"{name}_image"`` field holds the datum id.

    Parameters
    ----------
    name : str
        Device name; the image data key is ``f"{name}_image"``.
    frames : callable
        Called with no argument once per frame; returns a 2D array (rows, columns),
        int32 for a realistic Pilatus (the descriptor says ``dtype_numpy='<i4'``). It is
        written to the file unchanged.
    write_dir : pathlib.Path
        Must exist. Used as the FileStore ``root``; files go under
        ``write_dir / strftime(path_template)``, which the fake IOC creates as ADCore
        does with ``CreateDirectory=-3`` (at most the last three levels).
    model : str, optional
        Value of ``cam.model`` (``Model_RBV``), part of the descriptor configuration.
    frames_per_point : int, optional
        ``cam.num_images``: frames per trigger; the plugin's ``num_capture`` is staged
        to 0 so ophyd uses this as ``frame_per_point``.
    spec : str, optional
        Resource spec to announce instead of ``"AD_HDF5"`` (an alias registered for the
        same handler).
    acquire_time : float, optional
        ``cam.acquire_time`` in seconds (``acquire_period`` is set to the same value).
    path_template : str, optional
        strftime template of the directory under ``write_dir`` (relative), as profiles
        date their asset directories.
    shape : tuple of int, optional
        (rows, columns) the IOC reports before the first acquisition: the cam's
        ``ArraySize`` readbacks (the descriptor's shape if described before a trigger)
        and the HDF5 plugin's, which ophyd requires non-zero at stage (a "primed"
        plugin, as after ``hdf5.warmup()``). Default: a Pilatus 300K. After each
        acquisition the readbacks follow the shape of the frames written.

    Returns
    -------
    PilatusDetector
        An instance of the fake subclass ``FakePilatusDetector``; its
        :class:`FakeAreaDetectorIOC` is available as ``det.fake_ioc``.
    """
    write_dir = Path(write_dir).resolve()
    if not write_dir.is_dir():
        raise FileNotFoundError(f"write_dir {write_dir} does not exist")
    if frames_per_point < 1:
        raise ValueError("frames_per_point must be at least 1")

    det = make_fake_device(PilatusDetector)("XF:28ID1-ES{Det:PIL}", name=name)
    cam, hdf5 = det.cam, det.hdf5

    # Python-side paths: the IOC and this process see the same file system.
    template = os.path.join(str(write_dir), path_template)
    hdf5.reg_root = str(write_dir)
    hdf5.write_path_template = template
    hdf5.read_path_template = template
    if spec is not None:
        hdf5.filestore_spec = spec

    for attr, enums in _CAM_ENUMS.items():
        getattr(cam, attr).sim_set_enum_strs(enums)
    for attr, enums in _PLUGIN_ENUMS.items():
        getattr(hdf5, attr).sim_set_enum_strs(enums)

    # IOC start-up values (``Model_RBV``, ``Manufacturer_RBV`` etc. are read-only PVs).
    for sig, value in [
        (cam.manufacturer, "Dectris"),
        (cam.model, model),
        (cam.acquire, 0),
        (cam.acquire_time, float(acquire_time)),
        (cam.acquire_period, float(acquire_time)),
        (cam.num_images, int(frames_per_point)),
        (cam.num_exposures, 1),
        (cam.image_mode, 1),
        (cam.trigger_mode, 0),
        (cam.array_callbacks, 1),
        (cam.array_counter, 0),
        (cam.array_size.array_size_y, int(shape[0])),
        (cam.array_size.array_size_x, int(shape[1])),
        (hdf5.array_size.height, int(shape[0])),
        (hdf5.array_size.width, int(shape[1])),
        (cam.port_name, "PIL"),
        (hdf5.plugin_type, "NDFileHDF5"),
        (hdf5.port_name, "HDF1"),
        (hdf5.nd_array_port, "PIL"),
        (hdf5.enable, 1),
        (hdf5.blocking_callbacks, 0),
        (hdf5.file_write_mode, 2),  # left in Stream by a previous run
        (hdf5.capture, 0),
        (hdf5.num_capture, 0),
        (hdf5.num_captured, 0),
        (hdf5.auto_increment, 1),
        (hdf5.auto_save, 1),
        (hdf5.file_template, "%s%s_%6.6d.h5"),
        (hdf5.file_path, ""),
        (hdf5.file_name, ""),
        (hdf5.file_number, 0),
        (hdf5.file_path_exists, 0),
        (hdf5.full_file_name, ""),
    ]:
        sig.sim_put(value)

    det.fake_ioc = FakeAreaDetectorIOC(det, frames)
    return det
