import Glibc
import Synchronization

/// Passes SIGINT, SIGTERM and SIGHUP on to a child while the parent waits for it, so a child such as
/// QEMU never outlives the command that started it (`timeout`, a closed terminal, Ctrl-C).
package enum SignalForwarding {
    static let signals = [SIGINT, SIGTERM, SIGHUP]
    /// The child; 0 before it exists. Atomics, because the handler may run on any thread.
    private static let target = Atomic<Int32>(0)
    /// A signal that came before the child existed, to send once it does.
    private static let pending = Atomic<Int32>(0)

    /// Installs the handlers; call before starting the child, then `forward(to:)`.
    package static func install() {
        target.store(0, ordering: .sequentiallyConsistent)
        pending.store(0, ordering: .sequentiallyConsistent)
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                let pid = SignalForwarding.target.load(ordering: .sequentiallyConsistent)
                if pid > 0 {
                    kill(pid, signal)
                } else {
                    SignalForwarding.pending.store(signal, ordering: .sequentiallyConsistent)
                }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
    }

    /// Sends later signals to `pid`, and any that came already.
    package static func forward(to pid: pid_t) {
        target.store(pid, ordering: .sequentiallyConsistent)
        let early = pending.exchange(0, ordering: .sequentiallyConsistent)
        if early != 0 { kill(pid, early) }
    }

    /// Unblocks SIGINT, SIGTERM and SIGHUP, which a process inherits blocked when whatever
    /// started it had them blocked (the Swift test runner does): `kill`, `timeout` and Ctrl-C must
    /// stop layerctl wherever it was started from. Their actions stay as inherited, so a signal
    /// that `nohup` ignores stays ignored. Call first thing in `main`.
    package static func unblockStopSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Restores the default actions.
    package static func remove() {
        for signal in signals { Glibc.signal(signal, SIG_DFL) }
        target.store(0, ordering: .sequentiallyConsistent)
    }
}
