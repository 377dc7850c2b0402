# onpyrunner's judge fork server for CPython and PyPy (images/languages.toml `judge_server`).
#
# The launcher starts it once per judged run as `INTERPRETER FLAGS... onpyrunner_fork.py --
# RUN_ARGV...` with a SOCK_SEQPACKET socket as fd 3 and an empty memfd as stdin. RUN_ARGV must
# start with the same interpreter and flags (so buffering, -u and the like are the run
# command's), then the script and its arguments. Per test the launcher sends b"test" with the
# test's input (a memfd) attached; the server forks, says b"pid N", waits for the child and
# says b"end STATUS UTIME_US STIME_US MAXRSS_KIB". The child becomes what `RUN_ARGV` would
# have been: its own process group, the input as fd 0, a new __main__ from this interpreter's
# pristine one, sys.argv and sys.path[0] as for the script, and the interpreter's normal
# ending (SystemExit, atexit, flushing, threads) since the script runs at this module's top.
#
# No docstring: the pristine globals below must be what any fresh __main__ starts with.
_pristine = dict(globals())

import os
import sys

_modules_before = set(sys.modules)

import socket


def _run_argv():
    argv = getattr(sys, "orig_argv", None)
    if argv is None or len(sys.argv) < 2 or sys.argv[1] != "--":
        sys.exit(3)
    prefix = argv[: len(argv) - len(sys.argv)]
    run = sys.argv[2:]
    # The launcher checked that the program is the same; its flags are checked here (argv[0]
    # may have been resolved by a wrapper).
    if run[1 : len(prefix)] != prefix[1:] or len(run) <= len(prefix):
        sys.exit(3)
    script = run[len(prefix)]
    if script.startswith("-"):
        sys.exit(3)
    return run, run[len(prefix):]


def _serve(sock):
    """Serve tests until the launcher hangs up; returns only in a test's child."""
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 1)
        if msg != b"test" or len(fds) != 1:
            os._exit(0)
        fd = fds[0]
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            sock.close()
            os.dup2(fd, 0)
            os.close(fd)
            return
        os.close(fd)
        try:
            # Also here, as shells do: the launcher may kill the group before the child ran.
            os.setpgid(pid, pid)
        except OSError:
            pass
        sock.send(b"pid %d" % pid)
        _, status, ru = os.wait4(pid, 0)
        sock.send(
            b"end %d %d %d %d"
            % (status, round(ru.ru_utime * 1e6), round(ru.ru_stime * 1e6), ru.ru_maxrss)
        )


_orig_argv, _argv = _run_argv()
_sock = socket.socket(fileno=3)
# CPython: the server's objects are left out of every collection a child makes, the one at
# its exit included, so a child does not touch (and copy) their pages: about 1.5 ms of each
# test's 6. PyPy has no gc.freeze (its GC moves objects anyway).
import gc

if hasattr(gc, "freeze"):
    gc.freeze()
del gc
_sock.send(b"ready")
_serve(_sock)
del _sock

# In the test's child from here on.
_path = os.path.abspath(_argv[0])
sys.argv = _argv
sys.orig_argv = _orig_argv
sys.path[0] = os.path.dirname(_path)
for _name in set(sys.modules) - _modules_before:
    del sys.modules[_name]
_main = type(sys)("__main__")
_main.__dict__.update(_pristine)
_main.__file__ = _path
if _pristine.get("__loader__") is not None:
    _main.__loader__ = type(_pristine["__loader__"])("__main__", _path)
sys.modules["__main__"] = _main
del socket, _pristine, _modules_before, _serve, _run_argv, _orig_argv, _argv, _name

def _exit_status(e):
    """The status an uncaught SystemExit gives, as the interpreter computes it."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _flush_std():
    """Flush sys.stdout and sys.stderr as Py_FinalizeEx does; False if stdout failed."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            if stream is sys.stdout:
                ok = False
                try:
                    import traceback

                    print("Exception ignored while flushing sys.stdout:", file=sys.stderr)
                    traceback.print_exc()
                    sys.stderr.flush()
                except Exception:
                    pass
    return ok


def _end(status):
    """End a CPython test as the interpreter's ending guarantees, without its teardown.

    Py_FinalizeEx joins the program's threads, runs its atexit callbacks and flushes
    sys.stdout and sys.stderr (120 if stdout cannot be flushed); then it tears every module
    down and collects, which in a fork copies the pages of the server's objects it touches:
    about 3 ms of a test's 6. Python does not promise __del__ for objects alive at exit; the
    program's own globals are cleared here all the same (their __del__ runs, a file the program
    left open on fd 1 is flushed), and its cycles are collected, before os._exit.
    """
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    import atexit
    import gc

    atexit._run_exitfuncs()
    if not _flush_std():
        status = 120
    # Then, as the teardown would: the program's objects go (a __del__ may still print, a
    # file left open on fd 1 writes what it holds), and what they printed is flushed.
    builtins = _main.__dict__.get("__builtins__")
    _main.__dict__.clear()
    if builtins is not None:
        _main.__dict__["__builtins__"] = builtins
    gc.collect()
    _flush_std()
    os._exit(status)


# PyPy's own ending stays: it flushes files the program left open, which have no refcount
# to be closed by; it is cheap there.
_fast = sys.implementation.name == "cpython"
_status = 0
try:
    with open(_path, "rb") as _file:
        _code = compile(_file.read(), _path, "exec", dont_inherit=True)
    del _file
    exec(_code, _main.__dict__)
except SystemExit as _e:
    if not _fast:
        raise
    _status = _exit_status(_e)
    del _e
except BaseException as _e:
    # As the interpreter reports an uncaught exception, without this module's frame.
    _e.__traceback__ = _e.__traceback__.tb_next
    sys.last_type, sys.last_value, sys.last_traceback = type(_e), _e, _e.__traceback__
    sys.excepthook(type(_e), _e, _e.__traceback__)
    del _e
    _status = 1
    if not _fast:
        sys.exit(1)
if _fast:
    _end(_status)
