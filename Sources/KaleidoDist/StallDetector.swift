import CMPI
import Foundation
import Logging

/// Stalled-rank detection over MPI without ULFM (Open MPI 4.1 has none).
///
/// A rank that dies is found by the launcher; a rank that is alive but stuck (a long sleep, a
/// hung file system, a deadlock in a helper library) is not, and blocking collectives would wait
/// for it forever. So collectives are started non-blocking and waited for by polling `MPI_Test`
/// against a deadline.
///
/// A deadline alone cannot say who is missing: a collective's request knows nothing about
/// arrivals. Every rank therefore numbers the collectives it starts (all ranks start the same
/// ones in the same order, it is an SPMD program), and a rank that has waited for one longer
/// than `reportAfter` tells every other rank, on a private duplicate of the communicator, how
/// far it has got. Healthy ranks waiting for the stuck one all report; the stuck one cannot.
/// When the deadline passes, the waiting rank names the ranks whose latest report is behind the
/// collective it waits for, logs it, and calls `MPI_Abort`, which ends every process of the job,
/// the stuck ones included — fail-stop, so the job can be restarted with `--resume auto`.
///
/// Reports are sent only after a long wait, so a step without stragglers costs nothing extra.
final class StallDetector {
    private var comm: MPI_Comm?
    private let world: MPI_Comm
    let rank: Int
    let worldSize: Int
    /// Seconds one wait may last; nil waits forever (plain `MPI_Wait`).
    var timeout: Double?
    /// The training step in progress (0: not training), for the error message.
    var step = 0
    /// Collectives this rank has started.
    private(set) var started = 0
    /// Per rank: the highest collective number and step it reported having reached (0: no report).
    private var reached: [(collective: Int, step: Int)]
    private var sends: [(buffer: UnsafeMutablePointer<Int64>, requests: [MPI_Request?])] = []
    private let logger = Logger(label: "kaleido.dist")
    private static let tag: Int32 = 0x4B41   // any tag: the communicator carries nothing else

    init(world: MPI_Comm, rank: Int, worldSize: Int) throws {
        self.world = world
        self.rank = rank
        self.worldSize = worldSize
        comm = kaleido_mpi_comm_null()
        let code = MPI_Comm_dup(world, &comm)
        guard code == kaleido_mpi_success() else {
            throw MPIError(operation: "MPI_Comm_dup", code: code, rank: rank, message: "could not create the stall-report communicator")
        }
        reached = Array(repeating: (0, 0), count: worldSize)
    }

    /// Numbers the next collective; call it when starting one.
    func nextCollective() -> Int {
        started += 1
        return started
    }

    /// How long a wait lasts before this rank reports where it is: short enough that every
    /// healthy rank has reported well before anyone's deadline.
    var reportAfter: Double { min(1, (timeout ?? 4) / 4) }

    /// Completes `request` of collective `number`, or ends the job when the deadline passes.
    func wait(_ request: inout MPI_Request?, collective number: Int, operation: String,
              check: (String, Int32) throws -> Void) throws {
        guard let timeout else {
            try check(operation, MPI_Wait(&request, kaleido_mpi_status_ignore()))
            return
        }
        let begin = DispatchTime.now().uptimeNanoseconds
        var reported = false
        while true {
            var done: Int32 = 0
            try check(operation, MPI_Test(&request, &done, kaleido_mpi_status_ignore()))
            if done != 0 { return }
            let waited = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
            guard waited >= reportAfter else { continue }
            if !reported {
                report()
                reported = true
            }
            try receiveReports(check: check)
            if waited >= timeout { abortJob(waitingFor: number, operation: operation, waited: waited) }
            // A long wait already: polling once a millisecond leaves the core to the other ranks.
            usleep(1000)
        }
    }

    /// Tells every other rank how far this one has got.
    private func report() {
        reclaimSends()
        let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: 2)
        buffer[0] = Int64(started)
        buffer[1] = Int64(step)
        var requests: [MPI_Request?] = []
        for peer in 0..<worldSize where peer != rank {
            var request: MPI_Request? = kaleido_mpi_request_null()
            // A failed report only makes the eventual message less precise.
            if MPI_Isend(buffer, 2, kaleido_mpi_int64(), Int32(peer), Self.tag, comm, &request) == kaleido_mpi_success() {
                requests.append(request)
            }
        }
        sends.append((buffer, requests))
    }

    private func reclaimSends() {
        sends.removeAll { send in
            var requests = send.requests, done: Int32 = 0
            MPI_Testall(Int32(requests.count), &requests, &done, kaleido_mpi_statuses_ignore())
            if done != 0 { send.buffer.deallocate() }
            return done != 0
        }
    }

    private func receiveReports(check: (String, Int32) throws -> Void) throws {
        while true {
            var flag: Int32 = 0
            var status = MPI_Status()
            try check("MPI_Iprobe(stall report)", MPI_Iprobe(kaleido_mpi_any_source(), Self.tag, comm, &flag, &status))
            guard flag != 0 else { return }
            let source = Int(kaleido_mpi_status_source(&status))
            var message: [Int64] = [0, 0]
            try check("MPI_Recv(stall report)", MPI_Recv(&message, 2, kaleido_mpi_int64(), Int32(source), Self.tag, comm,
                                                         kaleido_mpi_status_ignore()))
            if Int(message[0]) > reached[source].collective { reached[source] = (Int(message[0]), Int(message[1])) }
        }
    }

    /// The ranks that have not reported reaching collective `number`.
    func missing(for number: Int) -> [Int] {
        (0..<worldSize).filter { $0 != rank && reached[$0].collective < number }
    }

    private func abortJob(waitingFor number: Int, operation: String, waited: Double) -> Never {
        let behind = missing(for: number)
        let names = behind.map(String.init).joined(separator: ",")
        let seconds = String(format: "%.0f", waited)
        let message: String
        if behind.isEmpty {
            message = "collective \(number) (\(operation)) of step \(step) did not complete within \(seconds) s although every rank reached it; "
                + "the network or the MPI runtime is stuck"
        } else {
            let last = behind.map { reached[$0].collective == 0 ? "rank \($0): none" : "rank \($0): step \(reached[$0].step)" }
            message = "rank(s) \(names) did not reach step \(step) within \(seconds) s (collective \(number), \(operation)); "
                + "last reports: \(last.joined(separator: ", "))"
        }
        logger.critical("stalled rank: aborting the job (dist.timeout_seconds)",
                        metadata: ["missing_ranks": "\(names.isEmpty ? "none" : names)", "step": "\(step)", "detail": "\(message)"])
        fflush(nil)
        MPI_Abort(world, 3)
        exit(3)
    }

    /// Cancels reports nobody received and frees the communicator (before MPI_Finalize).
    func close() {
        for send in sends {
            var complete = true
            for var request in send.requests {
                var done: Int32 = 0
                MPI_Test(&request, &done, kaleido_mpi_status_ignore())
                if done == 0 {
                    MPI_Cancel(&request)
                    MPI_Request_free(&request)
                    complete = false
                }
            }
            // A cancelled send may still read its buffer: leak those 16 bytes rather than race.
            if complete { send.buffer.deallocate() }
        }
        sends.removeAll()
        try? receiveReports { _, _ in }
        MPI_Comm_free(&comm)
    }
}
