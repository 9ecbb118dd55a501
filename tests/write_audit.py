"""``python tests/write_audit.py LOG ARGS...``: the launcher (``superalign ARGS...``), or with
``LOG SCRIPT.py ARGS...`` that script, with a Python audit hook that appends every path this
process creates, opens for writing, renames, truncates or removes to LOG, one ``event<TAB>path``
per line. The multi-host tests read it to check that only process 0 writes shared files."""

import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_EVENTS = {"os.rename": 1, "os.remove": 0, "os.mkdir": 0, "os.rmdir": 0, "os.truncate": 0,
           "os.link": 1, "os.symlink": 1, "shutil.rmtree": 0, "shutil.copyfile": 1}


def main() -> None:
  log = open(sys.argv.pop(1), "a", buffering=1)   # opened before the hook: not logged

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                else isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
      if writes and isinstance(path, (str, bytes, os.PathLike)):
        log.write(f"open\t{os.path.abspath(os.fsdecode(path))}\n")
    elif event in _EVENTS:
      path = args[_EVENTS[event]]
      if isinstance(path, (str, bytes, os.PathLike)):
        log.write(f"{event}\t{os.path.abspath(os.fsdecode(path))}\n")

  sys.addaudithook(hook)
  if sys.argv[1:] and sys.argv[1].endswith(".py"):
    import runpy
    sys.argv.pop(0)
    runpy.run_path(sys.argv[0], run_name="__main__")
    return
  from superalign.main import run
  sys.argv[0] = "superalign"
  run()


if __name__ == "__main__":
  main()
