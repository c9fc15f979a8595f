import CKernels

/// The cores a thread may run on (Linux; every call fails elsewhere). Used to keep a background
/// thread off the core of a thread that must not wait for it (`CheckpointSaver`).
public enum ThreadAffinity {
    /// The calling thread's cores, in increasing order (nil where they cannot be read).
    public static func currentThreadCores() -> [Int]? {
        var mask = kaleido_core_mask()
        guard kaleido_thread_cores(&mask) == 0 else { return nil }
        var cores: [Int] = []
        withUnsafeBytes(of: &mask.words) { bytes in
            for (word, bits) in bytes.bindMemory(to: UInt64.self).enumerated() {
                for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 { cores.append(word * 64 + bit) }
            }
        }
        return cores.isEmpty ? nil : cores
    }

    /// Restricts the calling thread (and the threads it starts later) to `cores`; false when the
    /// system refused (a core outside the process's cgroup, or not Linux) or `cores` is empty or
    /// beyond 1024.
    @discardableResult
    public static func restrictCurrentThread(to cores: [Int]) -> Bool {
        let limit = Int(KALEIDO_CORE_MASK_WORDS) * 64
        guard !cores.isEmpty, cores.allSatisfy({ (0..<limit).contains($0) }) else { return false }
        var mask = kaleido_core_mask()
        withUnsafeMutableBytes(of: &mask.words) { bytes in
            let words = bytes.bindMemory(to: UInt64.self)
            for core in cores { words[core / 64] |= 1 << UInt64(core % 64) }
        }
        return kaleido_set_thread_cores(&mask) == 0
    }

    /// The core the calling thread runs on at this moment (nil where unknown).
    public static func currentCore() -> Int? {
        let core = kaleido_current_core()
        return core >= 0 ? Int(core) : nil
    }
}
