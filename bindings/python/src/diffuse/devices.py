"""Devices: what libdiffuse can run on here (diffuse_list_devices), and the
device a context runs on (diffuse_ctx_get_device, as ``Context.device``).

    for d in diffuse.list_devices():
        print(d.device.name, d.index, d.name, "ok" if d.available else d.note)
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Union

from . import _lib
from .enums import Device, Status
from .errors import error_for


@dataclass(frozen=True)
class DeviceInfo:
    """One device a context can run on (diffuse_device_info)."""

    device: Union[Device, int]  #: Device.CPU or Device.CUDA
    index: int  #: ordinal within its kind (0 for the CPU)
    available: bool  #: a context can run on it now
    name: str  #: e.g. the CPU model name
    memory_bytes: int  #: total memory (host RAM for the CPU)
    threads: int  #: CPU: cores the library would use; 0 for GPUs
    note: str  #: why it is unavailable, or how it was found


class ContextDevice(NamedTuple):
    """``Context.device``: what the context asked for and what it runs on."""

    requested: Union[Device, int]  #: the device given to the Context (AUTO, CPU, CUDA)
    info: DeviceInfo  #: the device it runs on (the CPU for AUTO without a usable GPU)


class ContextMemory(NamedTuple):
    """``Context.memory`` (diffuse_ctx_get_memory, since 0.4): the memory a
    context holds now and the most device memory it has held."""

    device: Union[Device, int]  #: where the context runs (CPU or CUDA)
    memory_budget: int  #: its memory_budget; 0 = none
    host_bytes: int  #: host working memory (arena) it keeps; 0 on CUDA
    device_bytes: int  #: CUDA: its arena plus its device copy of the weights
    device_peak_bytes: int  #: CUDA: the most device memory held at once


def new_device_info_array(n: int) -> Any:
    """*n* diffuse_device_info structs with struct_size set."""
    arr = (_lib.diffuse_device_info * n)()
    for d in arr:
        d.struct_size = ctypes.sizeof(_lib.diffuse_device_info)
    return arr


def device_info_of(c: Any) -> DeviceInfo:
    """A DeviceInfo from a filled diffuse_device_info."""
    try:
        device: Any = Device(c.device)
    except ValueError:
        device = int(c.device)
    return DeviceInfo(
        device=device,
        index=int(c.index),
        available=bool(c.available),
        name=c.name.decode("utf-8", "replace"),
        memory_bytes=int(c.memory_bytes),
        threads=int(c.threads),
        note=c.note.decode("utf-8", "replace"),
    )


def list_devices() -> List[DeviceInfo]:
    """The devices libdiffuse can use on this host (diffuse_list_devices):
    the CPU first, then one entry per GPU the CUDA backend reports. When the
    CUDA module or the driver is missing, one CUDA entry with
    ``available=False`` says which in its ``note``. Loads the library.
    """
    L = _lib.lib()
    capacity = 4
    while True:
        arr = new_device_info_array(capacity)
        count = ctypes.c_size_t(0)
        status = L.diffuse_list_devices(arr, capacity, ctypes.byref(count))
        if status != Status.OK:
            raise error_for(status, "diffuse_list_devices failed")
        if count.value <= capacity:
            return [device_info_of(arr[i]) for i in range(count.value)]
        capacity = count.value
