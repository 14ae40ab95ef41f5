"""Ctrl-C for both executors: the first interrupt asks the executor to stop and take this batch's
prompts off its servers, a second one quits at once.  runner.py takes SIGINT and SIGTERM through
its event loop (SIGINT alone through signal.signal where the loop cannot: Windows);
ray_executor.py, a synchronous loop, takes SIGINT through signal.signal."""
import contextlib
import signal


class Interrupts:
    """Whether a stop was asked for (`requested`), and the handlers that ask for it."""

    def __init__(self, log, where):
        self.log = log
        self.where = where  # whose queues the first interrupt cleans up: "the server", "the workers"
        self.requested = False
        self._first = self._second = None

    def interrupted(self):
        """A signal arrived: the first asks for a stop, the second quits."""
        if self.requested:
            self._second()
            return
        self.requested = True
        self.log(f"stopping: removing this batch's prompts from {self.where} (Ctrl-C again to quit at once)")
        self._first()

    @contextlib.contextmanager
    def on_loop(self, loop, main_task, wake):
        """While the block runs: SIGINT and SIGTERM through `loop`; the first sets `wake` (the main
        loop then cleans up), the second cancels `main_task`."""
        def quit_now():
            self.log("second interrupt: quitting without cleaning up the server queue")
            main_task.cancel()
        self._first, self._second = wake.set, quit_now
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.interrupted)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                if sig == signal.SIGINT:  # Windows: no loop signal handlers
                    try:
                        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.interrupted))
                    except (ValueError, OSError):
                        pass
        try:
            yield self
        finally:
            for sig in installed:
                try:
                    loop.remove_signal_handler(sig)
                except Exception:
                    pass

    @contextlib.contextmanager
    def on_main_thread(self):
        """While the block runs: SIGINT through signal.signal (a synchronous main loop, which reads
        `requested`); the second raises KeyboardInterrupt."""
        def quit_now():
            raise KeyboardInterrupt
        self._first, self._second = (lambda: None), quit_now
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda *_: self.interrupted())
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
