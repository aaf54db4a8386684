"""Keep a thread's alternate signal stack valid around OpenVINO, which replaces it.

OpenVINO's CPU plugin (2026.x) installs an alternate signal stack of its own (`sigaltstack`) on the
thread that first compiles a model on a `Core`, and when the plugin is destroyed it puts back the
stack it found, then unmaps its own. That assumes plugins die in the reverse order of their
creation, on the thread that made them. When they do not (two Cores freed in creation order, or a
Core freed by the garbage collector on another thread), the thread is left pointing at unmapped
memory. Python runs its signal handlers on the alternate stack (`SA_ONSTACK`), and so does
faulthandler, so the next Ctrl-C or timer signal kills the process with SIGSEGV and no traceback:
the unit-test process died that way inside a Ctrl-C test after the OpenVINO tests, a notebook
kernel would die the same way when interrupted, and a study's time limit (SIGALRM) likewise.

`kept()` wraps every call that may create a plugin: afterwards the thread gets a stack that optlab
owns and never frees (one per thread), so whatever the plugin puts back later is still valid.
`repair()` is the fallback where optlab is about to rely on a signal (a study's Ctrl-C and time
limit): a stack that is no longer mapped is replaced the same way. Linux only; elsewhere both do
nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from typing import Iterator, NamedTuple

SS_DISABLE = 2
_MIN_BYTES = 64 * 1024  # room for a signal frame with AVX-512 or AMX state, and faulthandler's report
_PAGE = 4096


class Stack(NamedTuple):
    """A thread's alternate signal stack as the kernel holds it (`address` 0 when none is set)."""

    address: int
    flags: int
    size: int


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_libc = None
_owned: dict[int, ctypes.Array] = {}  # thread id -> the buffer installed for it, kept for the process's life
_lock = threading.Lock()


def _c():
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def current() -> Stack | None:
    """The calling thread's alternate signal stack, or None where it cannot be read (not Linux)."""
    libc = _c()
    if libc is None:
        return None
    old = _StackT()
    if libc.sigaltstack(None, ctypes.byref(old)) != 0:
        return None
    return Stack(old.ss_sp or 0, old.ss_flags, old.ss_size)


def mapped(stack: Stack) -> bool:
    """Whether every page of `stack` is mapped memory (`mincore` fails with ENOMEM on a hole)."""
    libc = _c()
    if libc is None or not stack.address or stack.flags & SS_DISABLE:
        return True
    start = stack.address - stack.address % _PAGE
    length = stack.address + stack.size - start
    pages = (ctypes.c_ubyte * (-(-length // _PAGE)))()
    return libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), pages) == 0


def _install_owned(size: int) -> Stack:
    """Give the calling thread an optlab-owned stack of at least `size` bytes (reused per thread)."""
    libc = _c()
    ident = threading.get_ident()
    with _lock:
        buffer = _owned.get(ident)
        if buffer is None or ctypes.sizeof(buffer) < size:
            buffer = _owned[ident] = ctypes.create_string_buffer(max(size, _MIN_BYTES))
    new = _StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, ctypes.sizeof(buffer))
    if libc.sigaltstack(ctypes.byref(new), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack refused optlab's alternate signal stack")
    return current()


def owned(stack: Stack | None) -> bool:
    """Whether `stack` is one that optlab installed (and so is never freed)."""
    if stack is None:
        return False
    with _lock:
        return any(ctypes.addressof(b) == stack.address for b in _owned.values())


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Run a block that may create an OpenVINO plugin; if the block changed the calling thread's
    alternate signal stack, replace it with one optlab owns (at least as large), so no later
    destruction can leave the thread on freed memory."""
    before = current()
    try:
        yield
    finally:
        after = current()
        if before is not None and after is not None and after != before and not owned(after):
            _install_owned(max(before.size, after.size))


def repair() -> bool:
    """Replace the calling thread's alternate signal stack if it is no longer mapped; True if it was."""
    stack = current()
    if stack is None or mapped(stack):
        return False
    _install_owned(stack.size)
    return True
