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
try:
    with open(_path, "rb") as _file:
        _code = compile(_file.read(), _path, "exec", dont_inherit=True)
    del _file
    exec(_code, _main.__dict__)
except SystemExit:
    raise
except BaseException as _e:
    # As the interpreter reports an uncaught exception, without this module's frame.
    _e.__traceback__ = _e.__traceback__.tb_next
    sys.last_type, sys.last_value, sys.last_traceback = type(_e), _e, _e.__traceback__
    sys.excepthook(type(_e), _e, _e.__traceback__)
    del _e
    sys.exit(1)
