"""Your handlers live in this package; xconsumer finds them by name, no registration needed.

* A task with ``workName = "test01"`` runs the handler ``RunTest01`` (first letter upper-cased;
  ``Runtest01`` is accepted too).
* Write it as a method of a class named ``Work`` (created once, with no arguments) or as a
  module-level function, in any module of this package (this ``__init__`` included). Each
  handler name must exist only once in the whole package.
* A handler takes one argument, ``ctx`` (see ``xconsumer.works.SlotContextProtocol``), or none
  at all, Go-style.
* Handlers must stop when asked: check ``ctx.stopping`` and wait with ``ctx.sleep(seconds)``
  (it returns False as soon as the slot is being stopped) instead of ``time.sleep``.
* ``ctx.fence`` grows every time the slot changes hands; pass it to whatever you write to, so
  a stale owner that has not noticed it lost the slot can be rejected downstream.

See ``examples.py`` for one handler of each kind.
"""
