import Foundation

/// Owned, 64-byte aligned Float32 memory. Freed when the last tensor viewing it goes away.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// Bytes of address space reserved by `init?(reserving:)`, 0 for allocated storage.
    private let reservedBytes: Int

    public init(count: Int) {
        precondition(count >= 0, "negative tensor size \(count)")
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        self.count = count
        reservedBytes = 0
    }

    /// Address space for `count` floats that becomes memory only where it is written (an
    /// anonymous mapping without swap reservation; the kernel hands out zeroed pages on first
    /// touch). Nil where the system refuses the reservation (e.g. strict overcommit).
    public init?(reserving count: Int) {
        precondition(count > 0, "an empty reservation")
        let bytes = count * MemoryLayout<Float>.stride
        guard let address = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              address != MAP_FAILED else { return nil }
        pointer = address.bindMemory(to: Float.self, capacity: count)
        self.count = count
        reservedBytes = bytes
    }

    deinit {
        if reservedBytes > 0 { munmap(pointer, reservedBytes) } else { pointer.deallocate() }
    }
}

/// A dense, row-major Float32 tensor: a shape and a window into shared storage.
///
/// Images are channels-last (N, H, W, C) and videos (N, T, H, W, C), so a convolution's inner
/// dimension is contiguous and maps onto sgemm without transposes. Reshaping and slicing along
/// the first dimension return views that share storage; nothing is copied.
public struct Tensor: @unchecked Sendable {
    public let storage: TensorStorage
    /// Offset of element 0 inside `storage`, in floats.
    public let offset: Int
    public let shape: [Int]

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer + offset }
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    /// A new zero-filled tensor with its own storage.
    public init(zeros shape: [Int]) {
        let count = shape.reduce(1, *)
        self.init(storage: TensorStorage(count: count), offset: 0, shape: shape)
    }

    /// A new tensor holding `values` in row-major order.
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) needs \(shape.reduce(1, *)) values, got \(values.count)")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A view of `shape` over `storage` starting at `offset`.
    public init(storage: TensorStorage, offset: Int, shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= storage.count,
                     "view \(shape) at offset \(offset) exceeds storage of \(storage.count) floats")
        self.storage = storage
        self.offset = offset
        self.shape = shape
    }

    /// The same elements under another shape; one dimension may be -1 and is inferred.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let unknown = newShape.firstIndex(of: -1) {
            let known = newShape.filter { $0 != -1 }.reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            resolved[unknown] = count / known
        }
        precondition(resolved.reduce(1, *) == count, "cannot reshape \(shape) (\(count) elements) to \(newShape)")
        return Tensor(storage: storage, offset: offset, shape: resolved)
    }

    /// Rows `range` of the first dimension, as a view.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(rank > 0 && range.lowerBound >= 0 && range.upperBound <= shape[0], "slice \(range) out of \(shape)")
        let rowSize = shape.dropFirst().reduce(1, *)
        return Tensor(storage: storage, offset: offset + range.lowerBound * rowSize,
                      shape: [range.count] + shape.dropFirst())
    }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

    /// A copy of the elements, for tests and serialisation.
    public var array: [Float] { Array(buffer) }

    /// Whether both views start at the same float: the same storage at the same offset (a layer
    /// that handed back the tensor it was given, a survivor already at its mark).
    public func startsAtSameFloat(as other: Tensor) -> Bool { pointer == other.pointer }

    /// Copies `other`'s elements into this tensor (shapes must hold the same count).
    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        pointer.update(from: other.pointer, count: count)
    }
}

extension Tensor {
    /// A tensor of independent N(0, std²) values drawn from `rng`.
    public init(randomNormal shape: [Int], std: Float = 1, rng: inout SplitMix64) {
        self.init(zeros: shape)
        for i in 0..<count { pointer[i] = rng.normal() * std }
    }

    /// A tensor of independent U(low, high) values drawn from `rng`.
    public init(randomUniform shape: [Int], in range: ClosedRange<Float>, rng: inout SplitMix64) {
        self.init(zeros: shape)
        let width = range.upperBound - range.lowerBound
        for i in 0..<count { pointer[i] = range.lowerBound + rng.uniform() * width }
    }
}
