import Foundation
import KaleidoTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns SIGTERM and SIGUSR1 (what Slurm sends before preempting or at the time limit, with
/// `--signal=B:USR1@120` forwarded by the batch script) into a flag the training loop polls:
/// finish the step, save a checkpoint, exit 0, and let the job be requeued. SIGINT (Ctrl-C)
/// takes the same path (the CLI then exits 130); a second SIGINT ends the process at once with
/// `_exit(130)` from the handler, leaving the last committed checkpoint as it was (a save in
/// flight is a temporary directory that `--resume auto` skips).
///
/// While an instance lives, the signals' default action (terminate) is replaced by a handler
/// that only writes the signal number to a pipe (write(2) is async-signal-safe); a reader
/// thread sets the flag of every live instance under a lock. When the last instance goes, the
/// previous dispositions come back.
///
///     let preemption = PreemptionSignal()
///     for step in … {
///         …
///         if try preemption.agreed(communicator) { try store.save(…); return }   // every rank, same step
///     }
public final class PreemptionSignal: @unchecked Sendable {
    /// The signals handled by default.
    public static let defaultSignals: [Int32] = [SIGTERM, SIGUSR1, SIGINT]

    private let lock = NSLock()
    private var received: Int32?
    private let signals: [Int32]

    /// Installs handlers for `signals` (none: a flag set only by `request`, for tests), and
    /// unblocks them in the calling thread: a process inherits its parent's blocked-signal mask,
    /// and a launcher that blocks SIGTERM would otherwise leave the handler deaf.
    public init(signals: [Int32] = PreemptionSignal.defaultSignals) {
        self.signals = signals
        SignalHub.shared.subscribe(self, signals: signals)
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    deinit {
        SignalHub.shared.unsubscribe(self, signals: signals)
    }

    fileprivate func record(_ number: Int32) {
        lock.lock()
        if received == nil { received = number }
        lock.unlock()
    }

    /// Whether a handled signal has arrived in this process (or `request` was called).
    public var requested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return received != nil
    }

    /// The first signal received (`SIGTERM`, `SIGUSR1`), if any.
    public var signalName: String? {
        lock.lock()
        defer { lock.unlock() }
        guard let received else { return nil }
        switch received {
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "SIGUSR1"
        case SIGUSR2: return "SIGUSR2"
        case SIGINT: return "SIGINT"
        default: return "signal \(received)"
        }
    }

    /// Sets the flag as a signal would (tests, or a trainer stopping itself through the same path).
    public func request() { record(SIGUSR1) }

    /// Whether any rank was signalled, agreed by an all-reduce so every rank stops after the
    /// same step (the launcher may deliver the signal to ranks at slightly different times).
    /// Collective: every rank calls it at the same point of every step (or every k steps).
    public func agreed(_ communicator: Communicator) throws -> Bool {
        var flag: [UInt64] = [requested ? 1 : 0]
        try flag.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
        return flag[0] > 0
    }
}

/// The write end of the self-pipe, read by the C signal handler (set once, before any handler).
nonisolated(unsafe) private var signalPipeWrite: Int32 = -1
/// SIGINTs seen by the handler (only the handler writes it).
nonisolated(unsafe) private var interruptsReceived = 0

/// The handler: async-signal-safe calls only (write, _exit).
private func handleSignal(_ number: Int32) {
    if number == SIGINT {
        interruptsReceived += 1
        if interruptsReceived >= 2 { _exit(130) }
        let notice = "\nkaleido: interrupted; stopping after this step with a checkpoint (Ctrl-C again aborts at once)\n"
        _ = notice.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
    var byte = UInt8(truncatingIfNeeded: number)
    _ = write(signalPipeWrite, &byte, 1)
}

/// Process-wide owner of the signal handlers, the self-pipe and its reader thread.
private final class SignalHub: @unchecked Sendable {
    static let shared = SignalHub()

    private let lock = NSLock()
    private var subscribers: [ObjectIdentifier: (instance: Weak, signals: [Int32])] = [:]
    private var installed: [Int32: (count: Int, previous: sigaction)] = [:]

    private struct Weak { weak var value: PreemptionSignal? }

    private init() {
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0, "pipe() failed for the preemption signal handler")
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)   // a full pipe never blocks the handler
        signalPipeWrite = fds[1]
        let readEnd = fds[0]
        let reader = Thread { [unowned self] in
            var byte: UInt8 = 0
            while true {
                let n = read(readEnd, &byte, 1)
                if n == 1 {
                    self.deliver(Int32(byte))
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
        reader.name = "kaleido-preemption"
        reader.start()
    }

    func subscribe(_ instance: PreemptionSignal, signals: [Int32]) {
        lock.lock()
        defer { lock.unlock() }
        subscribers[ObjectIdentifier(instance)] = (Weak(value: instance), signals)
        for number in signals {
            if let entry = installed[number] {
                installed[number] = (entry.count + 1, entry.previous)
                continue
            }
            var action = sigaction()
            #if canImport(Glibc)
            action.__sigaction_handler.sa_handler = { handleSignal($0) }
            #else
            action.__sigaction_u.__sa_handler = { handleSignal($0) }
            #endif
            action.sa_flags = SA_RESTART
            sigemptyset(&action.sa_mask)
            var previous = sigaction()
            sigaction(number, &action, &previous)
            installed[number] = (1, previous)
        }
    }

    func unsubscribe(_ instance: PreemptionSignal, signals: [Int32]) {
        lock.lock()
        defer { lock.unlock() }
        subscribers[ObjectIdentifier(instance)] = nil
        for number in signals {
            guard let entry = installed[number] else { continue }
            if entry.count > 1 {
                installed[number] = (entry.count - 1, entry.previous)
            } else {
                var previous = entry.previous
                sigaction(number, &previous, nil)
                installed[number] = nil
            }
        }
    }

    private func deliver(_ number: Int32) {
        lock.lock()
        let targets = subscribers.values.filter { $0.signals.contains(number) }.compactMap(\.instance.value)
        lock.unlock()
        for target in targets { target.record(number) }
    }
}
